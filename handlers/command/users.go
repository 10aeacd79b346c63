package command

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// Read and write ports, defined here where they are used; the projection
// and the event store satisfy them.
type (
	userReader interface {
		LoadUser(userID string) (*domain.User, eventstore.Version, error)
		WaitFor(ctx context.Context, seq uint64) error
		// Accepted waits for seq and reports eventstore.ErrRejected if the
		// projection did not apply the event there.
		Accepted(ctx context.Context, seq uint64) error
	}
	eventLog interface {
		Append(ctx context.Context, subject string, v eventstore.Version, events ...domain.Event) (eventstore.Version, error)
		AppendFacts(ctx context.Context, pubs []eventstore.Publication) (int, error)
		// Head is a subject's trusted version (see eventstore.VersionSource).
		Head(ctx context.Context, subject string) (eventstore.Version, error)
	}
)

// Users is the user aggregate's repository: read state from the local
// projection, decide, append at the version that state was read at, and on
// a conflict wait for the projection to catch up with the subject and decide
// again.
type Users struct {
	read     userReader
	log      eventLog
	newID    func() string
	now      func() time.Time
	attempts int
}

func NewUsers(read userReader, log eventLog, newID func() string, now func() time.Time) *Users {
	return &Users{read: read, log: log, newID: newID, now: now, attempts: 50}
}

// ErrTooMuchContention is returned when a user's subject kept moving under
// every attempt; the caller may retry later.
var ErrTooMuchContention = errors.New("too many concurrent writes to this user")

// Update runs decide against the user's current state (nil for a user with
// no events yet) and appends the events it returns. decide gets the instant
// to decide at: now, or the time of the user's last event if this
// instance's clock is behind it, so that times on a subject never go
// backwards. decide may run several times and must not have side effects.
// Update returns the stream sequence of the last appended event (or the
// current version if there was nothing to append), after the local
// projection has applied it.
func (r *Users) Update(ctx context.Context, userID string, decide func(u *domain.User, at time.Time) ([]domain.Event, error)) (uint64, error) {
	subject := eventstore.UserSubject(userID)
	for attempt := 1; ; attempt++ {
		user, version, err := r.read.LoadUser(userID)
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
		for i := range events {
			events[i].ID = r.newID()
		}
		next, err := r.log.Append(ctx, subject, version, events...)
		if err == nil {
			err = r.read.Accepted(ctx, next.Seq)
			if err == nil || !errors.Is(err, eventstore.ErrRejected) || attempt == r.attempts {
				return next.Seq, err
			}
			continue // signed with a key retired just before: decide again
		}
		if !errors.Is(err, eventstore.ErrConflict) {
			return 0, err
		}
		if attempt == r.attempts {
			return 0, fmt.Errorf("update user %s: %w", userID, ErrTooMuchContention)
		}
		// Someone else wrote first. Wait until the projection holds what
		// they wrote, then decide again on the new state.
		latest, err := r.log.Head(ctx, subject)
		if err != nil {
			return 0, err
		}
		if err := r.read.WaitFor(ctx, latest.Seq); err != nil {
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
