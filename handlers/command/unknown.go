package command

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// UnknownEmails answers logins for emails no account has exactly as a
// wrong password would be answered, throttle included, without writing an
// event per attempt.
//
// An event per attempt would let anyone grow the log without bound by
// trying made-up emails, and before this type they all went to one subject
// at a version, so a flood made them conflict and be dropped. Instead the
// throttle state of the emails tried lives in a bounded LRU (the least
// recently tried are forgotten first: they are the ones an attacker is not
// hammering), and what happened is written as one login_failures_tallied
// event per instance and interval.
//
// What this gives up: the throttle of an unknown email is per instance and
// forgotten on restart, where an account's is decided from the log. The
// README (Enumeration) says what that reveals.
type UnknownEmails struct {
	rule domain.LoginThrottle
	log  factRecorder
	now  func() time.Time

	mu    sync.Mutex
	seen  *lru.Cache[string, domain.LoginFailures] // by email hash
	tally domain.LoginFailuresTallied
}

type factRecorder interface {
	RecordFacts(ctx context.Context, facts []ports.Fact) (int, error)
}

// DefaultUnknownEmails is how many unknown emails' throttles are kept: at
// about 200 bytes each, 100k cost some 20 MiB.
const DefaultUnknownEmails = 100_000

// NewUnknownEmails keeps the throttle state of up to size emails.
func NewUnknownEmails(rule domain.LoginThrottle, size int, log factRecorder, now func() time.Time) (*UnknownEmails, error) {
	if log == nil || now == nil {
		return nil, errors.New("command.NewUnknownEmails: a log and a clock are required")
	}
	if err := rule.Validate(); err != nil {
		return nil, fmt.Errorf("command.NewUnknownEmails: %w", err)
	}
	seen, err := lru.New[string, domain.LoginFailures](size)
	if err != nil {
		return nil, fmt.Errorf("command.NewUnknownEmails: %w", err)
	}
	return &UnknownEmails{rule: rule, log: log, now: now, seen: seen}, nil
}

// attempt answers a login for an email that has no account: throttled if
// the email was tried too often, else a wrong password, after burning the
// time a password check takes (burn may refuse with ErrBusy, as Verify
// would).
func (u *UnknownEmails) attempt(email string, burn func() error) error {
	key := domain.EmailHash(email)
	u.mu.Lock()
	f, _ := u.seen.Get(key)
	now := u.now()
	until, throttled := f.ThrottledAt(now)
	if throttled {
		u.count(func(t *domain.LoginFailuresTallied) { t.Throttled++ })
	}
	u.mu.Unlock()
	if throttled {
		return domain.Throttled(until, now)
	}
	if err := burn(); err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	// Read again: other attempts on the same email may have failed
	// while this one was hashing.
	f, known := u.seen.Get(key)
	f, _ = u.rule.Fail(f, u.now())
	u.seen.Add(key, f)
	u.count(func(t *domain.LoginFailuresTallied) {
		t.Failures++
		if !known {
			t.Emails++
		}
	})
	return domain.ErrInvalidCredentials
}

// count updates the running tally under mu.
func (u *UnknownEmails) count(change func(*domain.LoginFailuresTallied)) {
	if u.tally.From.IsZero() {
		u.tally.From = u.now()
	}
	change(&u.tally)
}

// Flush writes the tally so far, if anything happened, and starts a new
// one. A tally that cannot be written is kept and written with the next.
func (u *UnknownEmails) Flush(ctx context.Context) error {
	u.mu.Lock()
	t := u.tally
	u.tally = domain.LoginFailuresTallied{}
	u.mu.Unlock()
	if t.From.IsZero() {
		return nil
	}
	t.To = u.now()
	if t.To.Before(t.From) {
		t.To = t.From
	}
	if _, err := u.log.RecordFacts(ctx, []ports.Fact{{Event: domain.TallyUnknownEmailLogins(t)}}); err != nil {
		u.mu.Lock()
		u.tally.From = t.From
		u.tally.Failures += t.Failures
		u.tally.Emails += t.Emails
		u.tally.Throttled += t.Throttled
		u.mu.Unlock()
		return fmt.Errorf("record failed logins for unknown emails: %w", err)
	}
	return nil
}

// Run flushes the tally every interval until ctx ends. The caller flushes
// once more after it returns, so nothing counted is lost on shutdown.
func (u *UnknownEmails) Run(ctx context.Context, interval time.Duration, onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := u.Flush(ctx); err != nil {
				onError(err)
			}
		}
	}
}
