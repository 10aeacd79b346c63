package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// AppendRegistry appends decided events to a registry's history (see
// Append and domain.ServiceKeysRegistry).
func (s *Store) AppendRegistry(ctx context.Context, registry string, v Version, events ...domain.Event) (Version, error) {
	return s.Append(ctx, RegistrySubject(registry), v, events...)
}

// RegistryVersion is a registry's trusted version now (see Head).
func (s *Store) RegistryVersion(ctx context.Context, registry string) (Version, error) {
	return s.Head(ctx, RegistrySubject(registry))
}

// Decide appends to one subject without a projection, as the CLI does on a
// stopped data dir or through --nats-url: it reads the subject's history,
// judged with ring (see CheckedHistory), gives decide the authentic events,
// and appends what decide returns, signed with the key in force (which
// ring must hold), at the version it read. Another writer in between makes
// it fail with ErrConflict; the caller may run it again.
func (s *Store) Decide(ctx context.Context, ring *domain.Keyring, subject string, decide func(history []domain.Event, at time.Time) ([]domain.Event, error)) (Version, error) {
	chain, _, err := s.KeyHistory(ctx, ring)
	if err != nil {
		return Version{}, err
	}
	key, ok := ring.Key(chain.Active)
	if chain.Active == "" || !ok {
		return Version{}, fmt.Errorf("%w: key %q is in force, but not in the given key ring", domain.ErrKeyUnavailable, chain.Active)
	}
	prev := s.verifier
	s.verifier = ring
	history, err := s.CheckedHistory(ctx, subject)
	s.verifier = prev
	if err != nil {
		return Version{}, err
	}
	var v Version
	var events []domain.Event
	for _, se := range history {
		v.Seq = se.Seq
		if se.Err == nil {
			v.Head, v.Time = se.Event.Hash, se.Event.Time
			events = append(events, se.Event)
		}
	}
	decided, err := decide(events, domain.NextEventTime(time.Now(), v.Time))
	if err != nil || len(decided) == 0 {
		return v, err
	}
	return s.appendWith(ctx, key, subject, v, decided...)
}
