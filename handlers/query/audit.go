package query

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

type (
	// userHistory reads histories from the log, each message judged as
	// the projection judges it (Err set on the ones it would reject). A
	// user's history is everything a replay of the user must fold, in log
	// order: its chained subject and the uses recorded apart from it.
	userHistory interface {
		UserHistory(ctx context.Context, userID string) ([]ports.StoredEvent, error)
		// EmailHistory is an email's claims, and the user of the first
		// authentic one (ports.ErrNotInLog if none).
		EmailHistory(ctx context.Context, email string) (userID string, claims []ports.StoredEvent, err error)
	}
	// sessionOwners maps a session to its user: the projection does it
	// with one lookup, the log (for the CLI) by reading it.
	sessionOwners interface {
		UserOfSession(ctx context.Context, sessionID string) (string, error)
	}
)

// AuditHandler answers auditors' questions from the log itself; the HTTP
// API and the `ledger audit` commands both go through it.
type AuditHandler struct {
	Owners sessionOwners
	Log    userHistory
	// Secrets opens sealed emails for RevealEmail; nil shows them as
	// EmailSealed.
	Secrets SecretOpener
}

// SecretOpener is the part of ports.Secrets the audit needs.
type SecretOpener interface {
	Open(ctx context.Context, userID, purpose, sealed string) ([]byte, error)
}

// What the audit shows for a registration's email when it cannot show the
// email itself.
const (
	EmailErased = "(erased)" // the user's data key was destroyed
	EmailSealed = "(sealed)" // this reader cannot open it (no data keys at hand)
)

// SecretEmail is the purpose emails are sealed under (as the signup seals
// them).
const SecretEmail = "email"

// RevealEmail is the email of a user_registered event as an auditor may
// see it: the email, EmailErased once the user's data key is destroyed, or
// EmailSealed if it cannot be opened here. Other events have none ("").
// Registrations written before emails were sealed show theirs as stored.
func (h AuditHandler) RevealEmail(ctx context.Context, e domain.Event) string {
	if e.Type != domain.EventUserRegistered {
		return ""
	}
	p, err := domain.DecodePayload[domain.UserRegistered](e)
	if err != nil {
		return ""
	}
	if p.EmailSealed == "" {
		return p.Email
	}
	if h.Secrets == nil {
		return EmailSealed
	}
	clear, err := h.Secrets.Open(ctx, e.UserID, SecretEmail, p.EmailSealed)
	switch {
	case errors.Is(err, ports.ErrErased):
		return EmailErased
	case err != nil:
		return EmailSealed
	}
	return string(clear)
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
	userID, err := h.Owners.UserOfSession(ctx, sessionID)
	if err != nil {
		return AsOf{}, err
	}
	history, err := h.Log.UserHistory(ctx, userID)
	if err != nil {
		return AsOf{}, err
	}
	return AsOfFromHistory(history, sessionID, at)
}

// AsOfFromHistory replays a user's stored events into a session's verdict at
// `at`, passing over those with Err set (unreadable or not authentic, as the
// log adapter judged them; verify reports them). The HTTP API, the CLI and
// the differential test all replay through it.
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

// SessionEvents lists the events of a session's user that concern the
// session, between since and until.
func (h AuditHandler) SessionEvents(ctx context.Context, sessionID string, since, until time.Time) ([]ports.StoredEvent, error) {
	if !domain.IsSessionID(sessionID) {
		return nil, domain.ErrSessionNotFound
	}
	userID, err := h.Owners.UserOfSession(ctx, sessionID)
	if err != nil {
		return nil, err
	}
	events, err := h.UserEvents(ctx, userID, since, until)
	out := events[:0]
	for _, se := range events {
		if se.Err != nil || concerns(se.Event, sessionID) {
			out = append(out, se)
		}
	}
	return out, err
}

// EmailEvents lists an email's claims and its user's events, in log order,
// between since and until.
func (h AuditHandler) EmailEvents(ctx context.Context, email string, since, until time.Time) ([]ports.StoredEvent, error) {
	userID, claims, err := h.Log.EmailHistory(ctx, email)
	if err != nil {
		return nil, err
	}
	events, err := h.UserEvents(ctx, userID, since, until)
	if err != nil {
		return nil, err
	}
	for _, se := range claims {
		if InWindow(se, since, until) {
			events = append(events, se)
		}
	}
	sort.Slice(events, func(i, j int) bool { return events[i].Seq < events[j].Seq })
	return events, nil
}

// concerns reports whether an event of the session's user affects the session.
func concerns(e domain.Event, sessionID string) bool {
	switch e.Type {
	case domain.EventOtherSessionsRevoked, domain.EventUserRegistered:
		return true
	default:
		return e.SessionID == sessionID
	}
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

// HintedOwners maps a session to its user through an index the auditor
// need not trust (Hint: a stopped data dir's projection, one lookup), and
// confirms the answer in the log: the user's history, read and judged as
// UserHistory judges it (hash, chain, signature), must hold an authentic
// session_started of that session for that user. If the hint has no answer
// or the log does not confirm it, the session's user is found by Scan
// (reading the whole stream) and Fallback, if set, is told why. Only the
// user's history (its subject and its use subject) and the key subject are
// read otherwise.
//
// It is also the userHistory of the handler it serves (AuditHandler.Log):
// the history read to confirm a user is handed over, not read again.
type HintedOwners struct {
	Hint     sessionOwners
	Log      userHistory
	Scan     sessionOwners
	Fallback func(sessionID, why string)

	lastUser    string
	lastHistory []ports.StoredEvent
}

// UserOfSession implements sessionOwners.
func (o *HintedOwners) UserOfSession(ctx context.Context, sessionID string) (string, error) {
	why := "no index of sessions at hand"
	if o.Hint != nil {
		userID, err := o.Hint.UserOfSession(ctx, sessionID)
		switch {
		case err != nil:
			why = "the projection does not know the session (" + err.Error() + ")"
		case !plainToken(userID):
			why = "the projection names a malformed user id"
		default:
			history, err := o.Log.UserHistory(ctx, userID)
			if err != nil {
				return "", err
			}
			if startedIn(history, userID, sessionID) {
				o.lastUser, o.lastHistory = userID, history
				return userID, nil
			}
			why = "the log of the user the projection names (" + userID + ") holds no authentic start of the session"
		}
	}
	if o.Fallback != nil {
		o.Fallback(sessionID, why)
	}
	return o.Scan.UserOfSession(ctx, sessionID)
}

// UserHistory implements userHistory, once from what UserOfSession read.
func (o *HintedOwners) UserHistory(ctx context.Context, userID string) ([]ports.StoredEvent, error) {
	if o.lastHistory != nil && userID == o.lastUser {
		h := o.lastHistory
		o.lastUser, o.lastHistory = "", nil
		return h, nil
	}
	return o.Log.UserHistory(ctx, userID)
}

// EmailHistory implements userHistory.
func (o *HintedOwners) EmailHistory(ctx context.Context, email string) (string, []ports.StoredEvent, error) {
	return o.Log.EmailHistory(ctx, email)
}

// startedIn reports whether a user's judged history starts the session.
func startedIn(history []ports.StoredEvent, userID, sessionID string) bool {
	for _, se := range history {
		if se.Err == nil && se.Event.Type == domain.EventSessionStarted && se.Event.SessionID == sessionID && se.Event.UserID == userID {
			return true
		}
	}
	return false
}

// plainToken: a non-empty id that cannot widen a subject filter (no
// wildcards, separators or spaces), as the ledger's user ids are.
func plainToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
