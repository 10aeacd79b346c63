// Package query answers the read side from the local projection: validate
// (the hot path every gateway calls), and the caller's session list.
// Validation may record a use of the token; that write is queued, batched
// and paced by UseRecorder so it never adds latency to the answer, and a
// burst of uses does not take the CPU validations need.
package query
