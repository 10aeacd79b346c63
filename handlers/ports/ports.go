// Package ports holds what the application (handlers/command,
// handlers/query, handlers/httpapi) and the adapters that serve it
// (eventstore on NATS JetStream, projections on Pebble) agree on: the
// types that cross the boundary and the errors the application branches
// on. The application imports this package and domain, never an adapter;
// each consumer declares the small interface it needs in terms of these
// types. A test in this package enforces the rule.
package ports

import (
	"errors"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// Version is where a history (a user's, an email's) stands, as the read
// side last saw it: an opaque token for optimistic concurrency. Appending
// "at a version" succeeds only if nothing was appended since. Seq is the
// log position of its last message; Head and Time identify its last
// authentic event, which the next one links to and may not predate.
type Version struct {
	Seq  uint64
	Head string
	Time time.Time
}

// SessionPosition is where a session sits in a user's session list, which
// runs newest first: by start time, latest first, then by session id.
type SessionPosition struct {
	StartedAt time.Time
	SessionID string
}

// StoredEvent is an event as read back from the log, with where it sits.
// Err is set (and Event possibly partial) for a message that is not a
// readable, authentic event; such messages decide nothing.
type StoredEvent struct {
	Seq     uint64
	Subject string
	Stored  time.Time
	Event   domain.Event
	Err     error
}

// Fact is an event that decides nothing (a use, a failed login), appended
// at whatever version its history has. The log adapter picks the history
// from the event (its user's, or the one for facts about no known user).
type Fact struct {
	Event domain.Event
	// DedupKey, if set, is shared by every instance that may record the
	// same fact (a use of a session in one granularity bucket): the log
	// keeps one of them.
	DedupKey string
	// At, if known, is the history's version as the read side last saw it;
	// it spares the adapter a read.
	At *Version
}

// Errors the application branches on. Adapters return errors that match
// them with errors.Is.
var (
	// ErrConflict: the history moved on since it was read; read again and
	// decide again.
	ErrConflict = errors.New("the history changed since it was read")
	// ErrRejected: the event was appended but this instance did not accept
	// it (signed with a key rotated out a moment before); decide again.
	ErrRejected = errors.New("the appended event was rejected by the projection")
	// The log is not in a state the ledger can write to; an operator must
	// look. The ledger never repairs it.
	ErrStreamMissing  = errors.New("the ledger stream does not exist")
	ErrStreamSealed   = errors.New("the ledger stream is sealed")
	ErrStreamFull     = errors.New("the ledger stream refuses new messages (a limit was set on it)")
	ErrStreamTampered = errors.New("the ledger stream was tampered with")
	// ErrNotInLog: the log has nothing about the user, session or email.
	ErrNotInLog = errors.New("not found in the ledger")
)

// Revocation is one session revoked by the event at Seq: what the
// revocation feed sends. A logout-others is one revocation per session.
type Revocation struct {
	Seq       uint64    `json:"seq"`
	SessionID string    `json:"session_id"`
	UserID    string    `json:"user_id"`
	Reason    string    `json:"reason"` // e.g. revoked:logout
	At        time.Time `json:"at"`
}

// Rejected is a stored message the read side did not apply, and why.
type Rejected struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	EventID string `json:"event_id,omitempty"`
	Reason  string `json:"reason"` // decode, hash, chain, signature, invalid
	Detail  string `json:"detail"`
}
