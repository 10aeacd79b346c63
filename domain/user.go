package domain

import (
	"errors"
	"strings"
	"time"
)

// User is the aggregate every write decides against: one account and its
// sessions. Its methods never mutate it; they return the events to append,
// and the new state comes from folding those events like any other.
type User struct {
	id           string
	email        string
	passwordHash string
	sessions     map[string]*Session
	failures     LoginFailures
	apiKeys      map[string]APIKey     // not revoked; see apikey.go
	role         Role                  // see access.go
	challenges   map[Purpose]Challenge // latest per purpose; see lifecycle.go
	mfa          MFA                   // see mfa.go
	erased       bool                  // see erase.go
}

// NewUser rebuilds a user from stored state (a projection or a replay).
// sessions must hold every session of the user that is live at the time of
// the user's last event, or may become live again after it (a late use);
// sessions already dead then may be left out, since no decision reads them
// (a projection keeps them out of the state every write loads). A decision
// about a session by id (Terminate) needs that session among them, dead or
// not.
func NewUser(id, email, passwordHash string, sessions []*Session) *User {
	u := &User{id: id, email: email, passwordHash: passwordHash, sessions: make(map[string]*Session, len(sessions))}
	for _, s := range sessions {
		u.sessions[s.id] = s
	}
	return u
}

func (u *User) ID() string { return u.id }

// EmailHash is the hash of the user's normalized email (EmailHash): the
// email itself is only in user_registered, sealed under the user's key.
func (u *User) EmailHash() string    { return u.email }
func (u *User) PasswordHash() string { return u.passwordHash }

// SessionCount is how many sessions the user was rebuilt with.
func (u *User) SessionCount() int { return len(u.sessions) }

// Session returns one of the user's sessions.
func (u *User) Session(id string) (*Session, bool) {
	s, ok := u.sessions[id]
	return s, ok
}

// Register decides a new account. The email must already be normalized and
// the password hashed; the raw password never reaches the domain, and the
// email reaches the log only as its hash and sealedEmail (the email
// encrypted under the user's data key by the caller; see ports.Secrets).
func Register(userID, normalizedEmail, sealedEmail, passwordHash string, at time.Time) (Event, error) {
	if e, err := NormalizeEmail(normalizedEmail); err != nil || e != normalizedEmail {
		return Event{}, ErrInvalidEmail
	}
	if strings.Contains(sealedEmail, "@") {
		return Event{}, errors.New("register: the sealed email must not be the email")
	}
	return newEvent(EventUserRegistered, userID, "", at, UserRegistered{
		EmailHash: EmailHash(normalizedEmail), EmailSealed: sealedEmail, PasswordHash: passwordHash,
	}), nil
}

// StartSession decides a login. The max deadline and idle window come from
// the policy in force now and are written into the event.
func (u *User) StartSession(sessionID string, tokenHash TokenHash, method string, keepLoggedIn, mfa bool, at time.Time, p Policy) Event {
	return newEvent(EventSessionStarted, u.id, sessionID, at, SessionStarted{
		Method:            method,
		KeepLoggedIn:      keepLoggedIn,
		MFA:               mfa,
		MaxExpiresAt:      at.Add(p.MaxLifetime(keepLoggedIn, mfa)).UTC(),
		IdleWindowSeconds: int64(p.IdleWindow / time.Second),
		TokenHash:         tokenHash.String(),
	})
}

// Logout revokes the caller's own live session.
func (u *User) Logout(sessionID string, at time.Time) (Event, error) {
	if err := u.requireLive(sessionID, at); err != nil {
		return Event{}, err
	}
	return newEvent(EventSessionLoggedOut, u.id, sessionID, at, SessionLoggedOut{}), nil
}

// RevokeOthers revokes every other session of the user that is live at `at`
// and keeps the caller's. It returns how many sessions the event revokes;
// with none to revoke there is no event (ok is false).
func (u *User) RevokeOthers(keptSessionID string, at time.Time) (e Event, revoked int, ok bool, err error) {
	if err := u.requireLive(keptSessionID, at); err != nil {
		return Event{}, 0, false, err
	}
	for id, s := range u.sessions {
		if id != keptSessionID && s.live(at) {
			revoked++
		}
	}
	if revoked == 0 {
		return Event{}, 0, false, nil
	}
	return newEvent(EventOtherSessionsRevoked, u.id, keptSessionID, at, OtherSessionsRevoked{KeptSessionID: keptSessionID}), revoked, true, nil
}

// Terminate ends one of the user's sessions by id, on behalf of the caller's
// live session. A session of another user is reported as not found so ids
// cannot be probed. Terminating a session that is already dead is a no-op
// (ok is false).
func (u *User) Terminate(callerSessionID, targetSessionID string, at time.Time) (e Event, ok bool, err error) {
	if err := u.requireLive(callerSessionID, at); err != nil {
		return Event{}, false, err
	}
	target, found := u.sessions[targetSessionID]
	if !found {
		return Event{}, false, ErrSessionNotFound
	}
	if !target.live(at) {
		return Event{}, false, nil
	}
	return newEvent(EventSessionTerminated, u.id, targetSessionID, at, SessionTerminated{BySessionID: callerSessionID}), true, nil
}

func (u *User) requireLive(sessionID string, at time.Time) error {
	s, ok := u.sessions[sessionID]
	if !ok {
		return ErrSessionNotFound
	}
	if !s.live(at) {
		return ErrSessionNotActive
	}
	return nil
}
