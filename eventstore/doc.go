// Package eventstore is the append-only log of the ledger on NATS JetStream:
// one stream, one subject per aggregate (a user's history is the ordered
// subject ledger.user.<id>), optimistic appends with
// Nats-Expected-Last-Subject-Sequence, de-duplicated retries with Nats-Msg-Id,
// and ordered reads from any sequence. It also runs the embedded nats-server
// that makes a single binary self-contained.
package eventstore
