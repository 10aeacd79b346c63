package domain

import "time"

// Erasure: an admin erases a user (right to erasure). The user's events
// stay in the log, verifiable as ever, but what was sealed under the
// user's data key (the email, second-factor secrets) becomes unreadable
// once that key is destroyed, which the application does right after the
// user_erased event is in the log. The event itself revokes every session
// of the user that is live at its time (Session.Apply), and frees the
// email for a new signup.

// ReasonRevokedUserErased: the session's user was erased (user_erased).
const ReasonRevokedUserErased Reason = "revoked:user_erased"

// UserErased is user_erased's payload: who decided it (Principal.By).
type UserErased struct {
	By string `json:"by"`
}

// Erased reports whether the user was erased.
func (u *User) Erased() bool { return u.erased }

// WithErased is the user with its erasure, as stored by a projection.
func (u *User) WithErased(erased bool) *User {
	c := *u
	c.erased = erased
	return &c
}

// Erase decides the user's erasure. Erasing an erased user appends
// nothing (ok is false); the caller destroys the data key either way, so
// that erasing again finishes an erasure interrupted after its event.
func (u *User) Erase(by Principal, at time.Time) (e Event, ok bool) {
	if u.erased {
		return Event{}, false
	}
	return newEvent(EventUserErased, u.id, "", at, UserErased{By: by.By()}), true
}

// LiveSessions counts the user's sessions live at `at`: those an erasure
// at `at` revokes.
func (u *User) LiveSessions(at time.Time) int {
	n := 0
	for _, s := range u.sessions {
		if s.live(at) {
			n++
		}
	}
	return n
}
