package command

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// The ports the write side needs, declared here where they are used; the
// projection (reads) and the event store (the log) satisfy them.
type (
	userReader interface {
		// LoadUser is the user (nil if it has no history yet) and the
		// version of its history, from one consistent read. The user
		// holds the sessions that may be live (see domain.NewUser) and,
		// dead or not, those of sessionIDs that are the user's.
		LoadUser(userID string, sessionIDs ...string) (*domain.User, ports.Version, error)
		WaitFor(ctx context.Context, seq uint64) error
		// Accepted waits for seq and reports ports.ErrRejected if the
		// event there was not accepted.
		Accepted(ctx context.Context, seq uint64) error
	}
	// eventLog appends to the log. It gives every event its id, seals it
	// into its history and signs it; the application only decides.
	eventLog interface {
		AppendUser(ctx context.Context, userID string, v ports.Version, events ...domain.Event) (ports.Version, error)
		AppendEmailClaim(ctx context.Context, emailHash string, v ports.Version, e domain.Event) (ports.Version, error)
		RecordFacts(ctx context.Context, facts []ports.Fact) (int, error)
		// UserVersion and EmailVersion are a history's version now,
		// once the read side has checked everything in it.
		UserVersion(ctx context.Context, userID string) (ports.Version, error)
		EmailVersion(ctx context.Context, emailHash string) (ports.Version, error)
	}
)

// Users is the user aggregate's repository: read state from the local
// projection, decide, append at the version that state was read at, and on
// a conflict wait for the projection to catch up with the history and
// decide again.
type Users struct {
	read     userReader
	log      eventLog
	now      func() time.Time
	attempts int
}

// NewUsers builds the repository; every dependency is required.
func NewUsers(read userReader, log eventLog, now func() time.Time) (*Users, error) {
	if read == nil || log == nil || now == nil {
		return nil, errors.New("command.NewUsers: a reader, a log and a clock are required")
	}
	return &Users{read: read, log: log, now: now, attempts: 50}, nil
}

// ErrTooMuchContention is returned when a user's history kept moving under
// every attempt; the caller may retry later.
var ErrTooMuchContention = errors.New("too many concurrent writes to this user")

// errUserExists is what Create meets when the user already has a history.
var errUserExists = errors.New("user already exists")

// Update runs decide against an existing user's current state and appends
// the events it returns; a user with no history is domain.ErrUserNotFound,
// so decide never sees nil. decide gets the instant to decide at: now, or
// the time of the user's last event if this instance's clock is behind it,
// so that times in a history never go backwards. decide may run several
// times and must not have side effects. Update returns the log position of
// the last appended event (or the current one if there was nothing to
// append), after the local projection has applied it.
func (r *Users) Update(ctx context.Context, userID string, decide func(u *domain.User, at time.Time) ([]domain.Event, error)) (uint64, error) {
	return r.UpdateSessions(ctx, userID, nil, decide)
}

// UpdateSessions is Update for a decision about sessions named by id: the
// user decide gets holds them, dead or not, if they are the user's (a
// user's state otherwise holds only the sessions that may be live).
func (r *Users) UpdateSessions(ctx context.Context, userID string, sessionIDs []string, decide func(u *domain.User, at time.Time) ([]domain.Event, error)) (uint64, error) {
	return r.write(ctx, userID, sessionIDs, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		if u == nil {
			return nil, domain.ErrUserNotFound
		}
		return decide(u, at)
	})
}

// Create appends the first events of a user that has no history yet; if it
// has one, it fails with errUserExists.
func (r *Users) Create(ctx context.Context, userID string, decide func(at time.Time) ([]domain.Event, error)) (uint64, error) {
	return r.write(ctx, userID, nil, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		if u != nil {
			return nil, errUserExists
		}
		return decide(at)
	})
}

func (r *Users) write(ctx context.Context, userID string, sessionIDs []string, decide func(u *domain.User, at time.Time) ([]domain.Event, error)) (uint64, error) {
	for attempt := 1; ; attempt++ {
		user, version, err := r.read.LoadUser(userID, sessionIDs...)
		if err != nil {
			return 0, err
		}
		events, err := decide(user, domain.NextEventTime(r.now(), version.Time))
		if err != nil {
			return 0, err
		}
		if len(events) == 0 {
			return version.Seq, nil
		}
		next, err := r.log.AppendUser(ctx, userID, version, events...)
		if err == nil {
			err = r.read.Accepted(ctx, next.Seq)
			if err == nil || !errors.Is(err, ports.ErrRejected) || attempt == r.attempts {
				return next.Seq, err
			}
			continue // signed with a key retired just before: decide again
		}
		if !errors.Is(err, ports.ErrConflict) {
			return 0, err
		}
		if attempt == r.attempts {
			return 0, fmt.Errorf("update user %s: %w", userID, ErrTooMuchContention)
		}
		// Someone else wrote first. Wait until the projection holds what
		// they wrote, then decide again on the new state.
		if _, err := r.log.UserVersion(ctx, userID); err != nil {
			return 0, err
		}
		// Jitter keeps a crowd of writers to one user from colliding in step.
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Duration(rand.Int64N(int64(time.Millisecond) * int64(min(attempt, 10))))):
		}
	}
}
