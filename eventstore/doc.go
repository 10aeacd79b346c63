// Package eventstore is the append-only log of the ledger on NATS JetStream:
// one stream, one subject per aggregate (a user's history is the ordered
// subject ledger.user.<id>), optimistic appends with
// Nats-Expected-Last-Subject-Sequence, de-duplicated retries with Nats-Msg-Id,
// and ordered reads from any sequence (Reader; Store also appends). Every
// event gets its id, its seal into its subject's chain and its signature in
// one place (Store.sealAt), and the chain head it links to only from a
// verifier (VersionSource), never from the stream itself. The in-process
// nats-server lives in the sub-package embedded.
package eventstore
