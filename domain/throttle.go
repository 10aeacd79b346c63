package domain

import (
	"errors"
	"fmt"
	"time"
)

// LoginThrottle is the rule that slows down password guessing against one
// account. After After failed logins in a row, each one no more than Window
// after the one before, the account refuses logins for Base; every further
// failure once that lifts doubles it, up to Max. A successful login starts
// over, and so does a failure more than Window after the previous one.
//
// The rule is applied by whoever decides a failed login, and its outcome is
// written into the events (login_failed's attempt count, login_throttled's
// deadline), so every instance folding the log agrees on whether an account
// is throttled, whatever rule it was started with.
type LoginThrottle struct {
	After  int
	Window time.Duration
	Base   time.Duration
	Max    time.Duration
}

// DefaultLoginThrottle: five guesses, then 30 s, 1 min, 2 min… up to 15 min
// per further guess. An online guesser gets a few dozen tries a day; a
// person who mistypes five times waits half a minute.
func DefaultLoginThrottle() LoginThrottle {
	return LoginThrottle{After: 5, Window: time.Hour, Base: 30 * time.Second, Max: 15 * time.Minute}
}

// Validate rejects a rule that would never throttle or never let go.
func (r LoginThrottle) Validate() error {
	switch {
	case r.After < 1:
		return fmt.Errorf("login throttle: failures before throttling must be at least 1, got %d", r.After)
	case r.Window < time.Second:
		return fmt.Errorf("login throttle: window must be at least 1s, got %s", r.Window)
	case r.Base < time.Second || r.Max < r.Base:
		return fmt.Errorf("login throttle: need 1s <= base (%s) <= max (%s)", r.Base, r.Max)
	}
	return nil
}

// LoginFailures is an account's (or, kept in memory, an unknown email's)
// recent failed logins: the state the throttle rule decides from.
type LoginFailures struct {
	InARow int       `json:"in_a_row"` // failures since the last success or reset
	Last   time.Time `json:"last"`     // the latest failure
	Level  int       `json:"level"`    // throttles so far in this run of failures
	Until  time.Time `json:"until"`    // logins refused before this instant
}

// IsZero reports whether there are no failures to remember.
func (f LoginFailures) IsZero() bool {
	return f.InARow == 0 && f.Level == 0 && f.Last.IsZero() && f.Until.IsZero()
}

// ThrottledAt reports whether a login at `at` is refused, and until when.
func (f LoginFailures) ThrottledAt(at time.Time) (time.Time, bool) {
	return f.Until, at.Before(f.Until)
}

// Fail is the state after one more failed login at `at`, and whether this
// failure throttles the account (again).
func (r LoginThrottle) Fail(f LoginFailures, at time.Time) (LoginFailures, bool) {
	if f.Last.IsZero() || at.Sub(f.Last) > r.Window {
		f = LoginFailures{}
	}
	f.InARow++
	if at.After(f.Last) {
		f.Last = at
	}
	if f.InARow >= r.After {
		d := r.Max
		if f.Level < 30 && r.Base<<f.Level < r.Max {
			d = r.Base << f.Level
		}
		f.Level++
		if until := at.Add(d); until.After(f.Until) {
			f.Until = until
		}
		return f, true
	}
	return f, false
}

// Apply folds one event of the account into its failures. Only the
// decisions written into events count (see LoginThrottle), so folding needs
// no rule.
func (f LoginFailures) Apply(e Event) (LoginFailures, error) {
	switch e.Type {
	case EventSessionStarted:
		return LoginFailures{}, nil
	case EventLoginFailed:
		p, err := DecodePayload[LoginFailed](e)
		if err != nil {
			return f, err
		}
		if p.Reason != LoginFailedWrongPassword && p.Reason != LoginFailedWrongAPIKey && p.Reason != LoginFailedWrongCode {
			return f, nil
		}
		f = f.failed(p.InARow, e.Time)
	case EventMFAFailed: // a wrong second factor counts as a wrong password (mfa.go)
		p, err := DecodePayload[MFAFailed](e)
		if err != nil {
			return f, err
		}
		f = f.failed(p.InARow, e.Time)
	case EventLoginThrottled:
		p, err := DecodePayload[LoginThrottled](e)
		if err != nil {
			return f, err
		}
		f.Level = p.Level
		if p.Until.After(f.Until) {
			f.Until = p.Until.UTC()
		}
	}
	return f, nil
}

// failed is the state after a failure at `at` whose event counted inARow.
func (f LoginFailures) failed(inARow int, at time.Time) LoginFailures {
	f.InARow = inARow
	if inARow == 0 { // written before attempts were counted
		f.InARow++
	}
	if at.After(f.Last) {
		f.Last = at
	}
	if f.InARow == 1 {
		f.Level, f.Until = 0, time.Time{}
	}
	return f
}

// ErrTooManyAttempts is a login refused because of recent failures; the
// error is a *ThrottledError that says until when.
var ErrTooManyAttempts = errors.New("too many failed logins; retry later")

// ThrottledError carries the instant logins are accepted again, and how
// long that was from the instant it was decided.
type ThrottledError struct {
	Until time.Time
	Wait  time.Duration
}

// Throttled is the error for a login at `now` refused until `until`.
func Throttled(until, now time.Time) *ThrottledError {
	return &ThrottledError{Until: until, Wait: until.Sub(now)}
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("%v (until %s)", ErrTooManyAttempts, e.Until.Format(time.RFC3339))
}
func (e *ThrottledError) Unwrap() error { return ErrTooManyAttempts }

// RetryAfter is how long the caller should wait.
func (e *ThrottledError) RetryAfter() time.Duration { return e.Wait }

// FailLogin decides a wrong password for the account at `at`: a
// login_failed event, and a login_throttled event if this failure throttles
// the account.
func (u *User) FailLogin(normalizedEmail string, at time.Time, r LoginThrottle) []Event {
	return u.failLogin(LoginFailedWrongPassword, EmailHash(normalizedEmail), at, r)
}

// FailCurrentPassword decides a wrong current password given with the
// account's own token (a password change): the account's email is known
// only by its hash.
func (u *User) FailCurrentPassword(at time.Time, r LoginThrottle) []Event {
	return u.failLogin(LoginFailedWrongPassword, u.email, at, r)
}

// failLogin decides a failed login for a reason that counts towards the
// throttle (a wrong password or a wrong API key).
func (u *User) failLogin(reason, emailHash string, at time.Time, r LoginThrottle) []Event {
	next, throttled := r.Fail(u.failures, at)
	events := []Event{newEvent(EventLoginFailed, u.id, "", at, LoginFailed{
		Reason: reason, EmailHash: emailHash, InARow: next.InARow,
	})}
	if throttled {
		events = append(events, newEvent(EventLoginThrottled, u.id, "", at, LoginThrottled{
			Until: next.Until, Level: next.Level, InARow: next.InARow,
		}))
	}
	return events
}

// Failures is the account's recent failed logins.
func (u *User) Failures() LoginFailures { return u.failures }

// WithFailures is the user with its recent failed logins, as stored by a
// projection.
func (u *User) WithFailures(f LoginFailures) *User {
	c := *u
	c.failures = f
	return &c
}
