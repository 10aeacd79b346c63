// Package domain holds the session ledger's rules as pure Go: the events that
// make up the log, how they fold into a session's state, and the one function
// (Session.Verdict) that says whether a session is valid at an instant and why
// not. Nothing here reads a clock, a disk or the network; callers pass time,
// randomness and identifiers in, so that live validation, audit replay and
// tests all reach the same verdict from the same events.
package domain
