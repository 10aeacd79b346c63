package query

import (
	"context"
	"errors"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

type userHistory interface {
	UserHistory(ctx context.Context, userID string) ([]ports.StoredEvent, error)
}

// AuditHandler answers auditors' questions from the log itself: the local
// projection only maps a session to its user.
type AuditHandler struct {
	Sessions sessionReader
	Log      userHistory
}

// AsOf is an as-of verdict with the stream position of each event cited.
type AsOf struct {
	domain.AsOf
	Seqs map[string]uint64 // event id -> stream sequence
}

// SessionAsOf recomputes a session's verdict at `at` from its user's events.
func (h AuditHandler) SessionAsOf(ctx context.Context, sessionID string, at time.Time) (AsOf, error) {
	if !domain.IsSessionID(sessionID) {
		return AsOf{}, domain.ErrSessionNotFound
	}
	s, err := h.Sessions.Session(sessionID)
	if err != nil {
		return AsOf{}, err
	}
	history, err := h.Log.UserHistory(ctx, s.UserID())
	if err != nil {
		return AsOf{}, err
	}
	return AsOfFromHistory(history, sessionID, at)
}

// AsOfFromHistory replays a user's stored events (unreadable ones are
// skipped; verify reports them) into a session's verdict at `at`. The HTTP
// API, the CLI and the differential test all replay through it.
func AsOfFromHistory(history []ports.StoredEvent, sessionID string, at time.Time) (AsOf, error) {
	events := make([]domain.Event, 0, len(history))
	seqs := make(map[string]uint64, len(history))
	for _, se := range history {
		if se.Err == nil {
			events = append(events, se.Event)
			seqs[se.Event.ID] = se.Seq
		}
	}
	a, err := domain.SessionAsOf(events, sessionID, at)
	return AsOf{AsOf: a, Seqs: seqs}, err
}

// ErrUnknownUser: the log has no history for the user asked about.
var ErrUnknownUser = errors.New("no such user in the ledger")

// UserEvents lists a user's events between since and until (zero: open).
func (h AuditHandler) UserEvents(ctx context.Context, userID string, since, until time.Time) ([]ports.StoredEvent, error) {
	history, err := h.Log.UserHistory(ctx, userID)
	if err != nil {
		return nil, err
	}
	if len(history) == 0 {
		return nil, ErrUnknownUser
	}
	out := history[:0]
	for _, se := range history {
		if InWindow(se, since, until) {
			out = append(out, se)
		}
	}
	return out, nil
}

// InWindow reports whether an event's time is in [since, until]; zero
// bounds are open, and unreadable messages are always shown.
func InWindow(se ports.StoredEvent, since, until time.Time) bool {
	if se.Err != nil {
		return true
	}
	t := se.Event.Time
	return (since.IsZero() || !t.Before(since)) && (until.IsZero() || !t.After(until))
}
