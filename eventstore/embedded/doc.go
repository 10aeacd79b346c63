// Package embedded runs nats-server in-process: the single server that
// makes `ledger serve` one self-contained binary (Server), and a local
// JetStream cluster on loopback for `ledger dev-cluster` and for tests that
// need several nodes (Cluster). Production clusters run nats-server itself
// (see deploy/nats). With Users set, both admit only those nkey identities.
package embedded
