package domain

import (
	"fmt"
	"time"
)

// Reason says why a session is not valid. The part before the colon is the
// kind an API caller branches on; the part after is the detail.
type Reason string

const (
	ReasonNone              Reason = ""
	ReasonNotStarted        Reason = "not_started"
	ReasonExpiredIdle       Reason = "expired:idle"
	ReasonExpiredMax        Reason = "expired:max"
	ReasonRevokedLogout     Reason = "revoked:logout"
	ReasonRevokedOthers     Reason = "revoked:revoke_others"
	ReasonRevokedTerminated Reason = "revoked:terminated"
	// ReasonRevokedSessionLimit: evicted by a login beyond the user's
	// live-session limit (session_evicted).
	ReasonRevokedSessionLimit Reason = "revoked:session_limit"
)

// Kind is "expired", "revoked", "not_started" or "" for a valid session.
func (r Reason) Kind() string {
	for i := 0; i < len(r); i++ {
		if r[i] == ':' {
			return string(r[:i])
		}
	}
	return string(r)
}

// Detail is what follows the colon: idle|max or
// logout|revoke_others|terminated|session_limit|admin|password_changed|
// password_reset|user_erased.
func (r Reason) Detail() string {
	for i := 0; i < len(r); i++ {
		if r[i] == ':' {
			return string(r[i+1:])
		}
	}
	return ""
}

// Verdict is the answer to "is this session valid at this instant, and why
// not?". Deadlines are exclusive: at the deadline the session is expired.
type Verdict struct {
	Valid         bool
	Reason        Reason
	IdleExpiresAt time.Time // last recorded use + idle window, capped at max
	MaxExpiresAt  time.Time
	RevokedAt     time.Time // zero unless revoked
}

// ExpiresAt is the earlier of the two deadlines: when the session dies if
// nothing else happens.
func (v Verdict) ExpiresAt() time.Time {
	if v.IdleExpiresAt.Before(v.MaxExpiresAt) {
		return v.IdleExpiresAt
	}
	return v.MaxExpiresAt
}

// Session is one login's folded state. Fields change only by folding events.
type Session struct {
	id, userID   string
	tokenHash    TokenHash
	method       string
	keepLoggedIn bool
	mfa          bool
	startedAt    time.Time
	maxDeadline  time.Time
	idleWindow   time.Duration
	lastUseAt    time.Time
	revokedAt    time.Time
	revokedBy    Reason
}

// SessionFromEvent starts a session's state from its session_started event.
func SessionFromEvent(e Event) (*Session, error) {
	if e.Type != EventSessionStarted {
		return nil, fmt.Errorf("session from %s event: want %s", e.Type, EventSessionStarted)
	}
	p, err := decodeSessionStarted(e)
	if err != nil {
		return nil, err
	}
	h, err := ParseTokenHash(p.TokenHash)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", e.ID, err)
	}
	if e.SessionID == "" || e.UserID == "" || p.IdleWindowSeconds <= 0 || !p.MaxExpiresAt.After(e.Time) {
		return nil, fmt.Errorf("event %s: incomplete session_started", e.ID)
	}
	return &Session{
		id: e.SessionID, userID: e.UserID, tokenHash: h, method: p.Method,
		keepLoggedIn: p.KeepLoggedIn, mfa: p.MFA,
		startedAt: e.Time, maxDeadline: p.MaxExpiresAt.UTC(),
		idleWindow: time.Duration(p.IdleWindowSeconds) * time.Second,
		lastUseAt:  e.Time,
	}, nil
}

func (s *Session) ID() string                { return s.id }
func (s *Session) UserID() string            { return s.userID }
func (s *Session) TokenHash() TokenHash      { return s.tokenHash }
func (s *Session) KeepLoggedIn() bool        { return s.keepLoggedIn }
func (s *Session) Method() string            { return s.method } // password, api_key, email_code or magic_link
func (s *Session) MFA() bool                 { return s.mfa }
func (s *Session) StartedAt() time.Time      { return s.startedAt }
func (s *Session) LastUseAt() time.Time      { return s.lastUseAt }
func (s *Session) IdleWindow() time.Duration { return s.idleWindow }

// Verdict is the one rule for validity. Live validation, audit replay and the
// tests all call it; nothing else decides whether a session is valid.
//
// Clocks decide only expiry. A revocation the session has folded is final at
// any instant: it happened in log order, and an instance whose clock runs
// behind the one that decided the logout must not keep the token alive for
// the difference. (An as-of replay folds only the events up to its instant,
// so it still answers "valid" before the revocation.)
func (s *Session) Verdict(at time.Time) Verdict {
	v := Verdict{MaxExpiresAt: s.maxDeadline, IdleExpiresAt: s.idleDeadline(), RevokedAt: s.revokedAt}
	switch {
	case at.Before(s.startedAt):
		v.Reason = ReasonNotStarted
		v.RevokedAt = time.Time{}
	case !s.revokedAt.IsZero():
		v.Reason = s.revokedBy
	case !at.Before(s.maxDeadline):
		v.Reason = ReasonExpiredMax
		v.RevokedAt = time.Time{}
	case !at.Before(v.IdleExpiresAt):
		v.Reason = ReasonExpiredIdle
		v.RevokedAt = time.Time{}
	default:
		v.Valid = true
		v.RevokedAt = time.Time{}
	}
	return v
}

// Current is the verdict for live validation on an instance that has folded
// the session's start: the log says the session started, so a clock that
// runs behind the deciding instance's must not call it "not started". It is
// Verdict at the later of now and the start.
func (s *Session) Current(now time.Time) Verdict {
	if now.Before(s.startedAt) {
		now = s.startedAt
	}
	return s.Verdict(now)
}

// WithUse is the session as it will be once a use at `at` is folded.
// Validate answers with its verdict (CurrentWithUse) while that use is
// queued, so that its answer and every later one agree.
func (s *Session) WithUse(at time.Time) *Session {
	c := s.withUse(at)
	return &c
}

// CurrentWithUse is WithUse(at).Current(now) without the copy on the
// heap: validate answers it for every request while a use waits.
func (s *Session) CurrentWithUse(at, now time.Time) Verdict {
	c := s.withUse(at)
	return c.Current(now)
}

func (s *Session) withUse(at time.Time) Session {
	c := *s
	// Apply reads no payload of a use: skip SessionUse's encoding of one,
	// since validate calls this for every request while a use waits.
	_ = c.Apply(Event{Type: EventSessionUsed, UserID: s.userID, SessionID: s.id, Time: at.UTC()})
	return c
}

// live reports whether a revocation or a use at `at` still concerns the
// session: it is neither revoked nor expired. A session whose start carries
// a later time than `at` (a skewed clock) but precedes it in the log is live.
func (s *Session) live(at time.Time) bool {
	return s.Current(at).Valid
}

// Live is whether decisions at `at` still concern the session (see live).
// A session not live at `at` stays dead at every later instant unless a use
// at an earlier instant is folded after it: only then may a store leave it
// out of the state later decisions load (see NewUser).
func (s *Session) Live(at time.Time) bool { return s.live(at) }

func (s *Session) idleDeadline() time.Time {
	d := s.lastUseAt.Add(s.idleWindow)
	if d.After(s.maxDeadline) {
		return s.maxDeadline
	}
	return d
}

// Apply folds one event of the session's user into the session. Events about
// other sessions, and uses or revocations of a session that is no longer
// live (revoked, or expired at the event's time), change nothing: a dead
// token stays dead. Revocations apply by log order: other_sessions_revoked
// revokes every session folded before it, whatever their start times say.
func (s *Session) Apply(e Event) error {
	if e.UserID != s.userID {
		return nil
	}
	switch e.Type {
	case EventSessionUsed:
		if e.SessionID == s.id && s.live(e.Time) && e.Time.After(s.lastUseAt) {
			s.lastUseAt = e.Time
		}
	case EventSessionLoggedOut:
		if e.SessionID == s.id {
			s.revoke(e.Time, ReasonRevokedLogout)
		}
	case EventSessionTerminated:
		if e.SessionID == s.id {
			s.revoke(e.Time, ReasonRevokedTerminated)
		}
	case EventSessionEvicted:
		if e.SessionID == s.id {
			s.revoke(e.Time, ReasonRevokedSessionLimit)
		}
	case EventSessionRevokedByAdmin:
		if e.SessionID == s.id {
			s.revoke(e.Time, ReasonRevokedAdmin)
		}
	case EventPasswordChanged: // lifecycle.go
		p, err := DecodePayload[PasswordChanged](e)
		if err != nil {
			return err
		}
		if p.RevokeOtherSessions && p.BySessionID != s.id {
			s.revoke(e.Time, ReasonRevokedPasswordChanged)
		}
	case EventPasswordReset:
		s.revoke(e.Time, ReasonRevokedPasswordReset)
	case EventUserErased:
		s.revoke(e.Time, ReasonRevokedUserErased)
	case EventOtherSessionsRevoked:
		p, err := DecodePayload[OtherSessionsRevoked](e)
		if err != nil {
			return err
		}
		if p.KeptSessionID != s.id {
			s.revoke(e.Time, ReasonRevokedOthers)
		}
	}
	return nil
}

func (s *Session) revoke(at time.Time, why Reason) {
	if s.live(at) {
		s.revokedAt, s.revokedBy = at, why
	}
}

// SessionSnapshot is a session's state in plain fields, for storage
// adapters. Restoring a snapshot is the only way to build a Session other
// than folding events.
type SessionSnapshot struct {
	ID, UserID   string
	TokenHash    TokenHash
	Method       string
	KeepLoggedIn bool
	MFA          bool
	StartedAt    time.Time
	MaxExpiresAt time.Time
	IdleWindow   time.Duration
	LastUseAt    time.Time
	RevokedAt    time.Time
	RevokedBy    Reason
}

func (s *Session) Snapshot() SessionSnapshot {
	return SessionSnapshot{
		ID: s.id, UserID: s.userID, TokenHash: s.tokenHash, Method: s.method,
		KeepLoggedIn: s.keepLoggedIn, MFA: s.mfa, StartedAt: s.startedAt,
		MaxExpiresAt: s.maxDeadline, IdleWindow: s.idleWindow, LastUseAt: s.lastUseAt,
		RevokedAt: s.revokedAt, RevokedBy: s.revokedBy,
	}
}

func SessionFromSnapshot(p SessionSnapshot) *Session {
	return &Session{
		id: p.ID, userID: p.UserID, tokenHash: p.TokenHash, method: p.Method,
		keepLoggedIn: p.KeepLoggedIn, mfa: p.MFA, startedAt: p.StartedAt,
		maxDeadline: p.MaxExpiresAt, idleWindow: p.IdleWindow, lastUseAt: p.LastUseAt,
		revokedAt: p.RevokedAt, revokedBy: p.RevokedBy,
	}
}
