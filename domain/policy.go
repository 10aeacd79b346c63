package domain

import (
	"fmt"
	"time"
)

// Day is 24 hours; lifetimes are configured in whole days in the docs, but
// the policy keeps plain durations so tests can use seconds.
const Day = 24 * time.Hour

// Policy is the lifetime configuration applied when a session starts. The
// values chosen are written into the session_started event, so changing the
// policy later never changes the verdict of an existing session.
type Policy struct {
	MaxKeepLoggedIn    time.Duration // "keep me logged in", no second factor
	MaxSession         time.Duration // plain session, no second factor
	MaxMFAKeepLoggedIn time.Duration // "keep me logged in" with a second factor
	MaxMFASession      time.Duration // plain session with a second factor
	IdleWindow         time.Duration // a session unused this long expires
	// MaxSessionsPerUser is how many live sessions a user may hold: a
	// login beyond it revokes the oldest (session_evicted).
	MaxSessionsPerUser int
}

// DefaultPolicy is the product's documented policy: 12 months / 24 h, with
// 2FA 1 month / 24 h, a 30-day idle window, and at most 100 live sessions
// per user.
func DefaultPolicy() Policy {
	return Policy{
		MaxKeepLoggedIn:    365 * Day,
		MaxSession:         24 * time.Hour,
		MaxMFAKeepLoggedIn: 30 * Day,
		MaxMFASession:      24 * time.Hour,
		IdleWindow:         30 * Day,
		MaxSessionsPerUser: 100,
	}
}

// MaxLifetime is the longest a session may live, before idle expiry.
func (p Policy) MaxLifetime(keepLoggedIn, mfa bool) time.Duration {
	switch {
	case mfa && keepLoggedIn:
		return p.MaxMFAKeepLoggedIn
	case mfa:
		return p.MaxMFASession
	case keepLoggedIn:
		return p.MaxKeepLoggedIn
	default:
		return p.MaxSession
	}
}

// Validate rejects a policy that would issue sessions that are dead on arrival.
func (p Policy) Validate() error {
	if p.MaxSessionsPerUser < 1 {
		return fmt.Errorf("policy: max sessions per user must be at least 1, got %d", p.MaxSessionsPerUser)
	}
	for name, d := range map[string]time.Duration{
		"max lifetime (keep logged in)":      p.MaxKeepLoggedIn,
		"max lifetime":                       p.MaxSession,
		"max lifetime (2FA, keep logged in)": p.MaxMFAKeepLoggedIn,
		"max lifetime (2FA)":                 p.MaxMFASession,
		"idle window":                        p.IdleWindow,
	} {
		if d < time.Second {
			return fmt.Errorf("policy: %s must be at least 1s, got %s", name, d)
		}
	}
	return nil
}
