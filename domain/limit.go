package domain

import (
	"slices"
	"strings"
	"time"
)

// EventSessionEvicted is a session revoked because a login of its user went
// over the live-session limit (Policy.MaxSessionsPerUser). The login's
// decision appends one per evicted session, oldest first, right before its
// session_started; a session that is no longer live at the event's time is
// left as it is.
const EventSessionEvicted EventType = "session_evicted"

// SessionEvicted is the payload of session_evicted. Field names are part of
// the documented schema.
type SessionEvicted struct {
	BySessionID string `json:"by_session_id"` // the session whose start evicted it
	Limit       int    `json:"limit"`         // live sessions a user may hold
}

// Login decides a new session under the live-session limit: the
// session_started event (see StartSession), preceded by a session_evicted
// for each of the user's oldest live sessions that must go so that, with
// the new one, the user holds at most p.MaxSessionsPerUser live sessions.
// "Oldest" is by start time (then session id); "live" is live at `at`, the
// same instant the events are decided at, so the fold of these events
// revokes exactly the sessions counted here.
func (u *User) Login(sessionID string, tokenHash TokenHash, method string, keepLoggedIn, mfa bool, at time.Time, p Policy) []Event {
	return append(u.evictFor(sessionID, at, p), u.StartSession(sessionID, tokenHash, method, keepLoggedIn, mfa, at, p))
}

// evictFor is the session_evicted events a new session at `at` needs (see
// Login).
func (u *User) evictFor(sessionID string, at time.Time, p Policy) []Event {
	limit := max(p.MaxSessionsPerUser, 1)
	var live []*Session
	for _, s := range u.sessions {
		if s.id != sessionID && s.live(at) {
			live = append(live, s)
		}
	}
	var out []Event
	if excess := len(live) - (limit - 1); excess > 0 {
		slices.SortFunc(live, func(a, b *Session) int {
			if c := a.startedAt.Compare(b.startedAt); c != 0 {
				return c
			}
			return strings.Compare(a.id, b.id)
		})
		for _, s := range live[:excess] {
			out = append(out, newEvent(EventSessionEvicted, u.id, s.id, at, SessionEvicted{BySessionID: sessionID, Limit: limit}))
		}
	}
	return out
}
