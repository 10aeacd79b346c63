// Package projections folds the ledger stream into Pebble so that validation
// is one local key lookup. Every stored message goes through one function
// (Projection.ApplyBatch), whether it arrives live through the watermill
// router or in bulk during a catch-up or a rebuild; the last applied stream
// sequence is written in the same Pebble batch as the state it covers, so a
// crash can never leave the two apart, and re-applying a message is a no-op.
package projections
