// Package projections folds the ledger stream into Pebble so that validation
// is one local key lookup. Its invariants:
//
//   - Every stored message goes through one function (Projection.ApplyBatch,
//     whose body a catch-up or a rebuild calls with the batch's
//     order-independent checks already started as it was read), whether it
//     arrives live through the watermill router or in bulk.
//   - Nothing changes state unless it is the ledger's own: a message must
//     decode, match its hash, link to its subject's last authentic event and
//     carry the MAC of the signing key in force at its place in the log.
//     Anything else is rejected: recorded with its reason, counted, and
//     never a subject's head, so the subject's next legitimate event links
//     past it.
//   - A user's use subject (eventstore.UseSubject) has no chain and no
//     head: it takes only standalone session_used events of its user
//     (domain.JudgeUse), checked for hash and MAC like any other, folded
//     exactly as a use on the user's subject, and never moves the user's
//     subject's version. Uses fold as a maximum, so their order and
//     repetition change nothing.
//   - The checkpoint (the last applied stream sequence) is written in the
//     same Pebble batch as the state it covers, so a crash can never leave
//     the two apart, and re-applying a message is a no-op. It only ever
//     passes messages that were applied or rejected: a storage error, a gap
//     in the sequences, or a key this instance does not hold fails the
//     batch, and the projection stays behind (failing closed) until it can
//     go on.
//   - Freshness and Integrity watch the stream: reads fail closed when the
//     projection cannot show it is caught up within the lag bound, and
//     /readyz fails when the stream is no longer append-only and complete.
package projections
