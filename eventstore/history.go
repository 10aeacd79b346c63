package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
)

// StoredEvent is an event as read back from the log, with where it sits.
// Err is set (and Event partial) for a message that is not a readable event.
type StoredEvent struct {
	Seq     uint64
	Subject string
	Stored  time.Time
	Event   domain.Event
	Err     error
}

// Decode turns a record into a StoredEvent.
func Decode(r Record) StoredEvent {
	e, err := domain.DecodeEvent(r.Data)
	return StoredEvent{Seq: r.Seq, Subject: r.Subject, Stored: r.Stored, Event: e, Err: err}
}

// History reads one subject's events in order (all of the stream's if
// subject is empty).
func History(ctx context.Context, stream jetstream.Stream, subject string, fn func(StoredEvent) error) error {
	return ReadStream(ctx, stream, ReadOptions{Subject: subject}, func(r Record) error { return fn(Decode(r)) })
}

// ErrNotInLog means the log has nothing about the user, session or email.
var ErrNotInLog = errors.New("not found in the ledger")

// UserOfEmail finds the user an email was claimed for.
func UserOfEmail(ctx context.Context, stream jetstream.Stream, email string) (string, error) {
	normalized, err := domain.NormalizeEmail(email)
	if err != nil {
		return "", err
	}
	m, err := stream.GetLastMsgForSubject(ctx, EmailSubject(domain.EmailHash(normalized)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", fmt.Errorf("email %s: %w", normalized, ErrNotInLog)
	}
	if err != nil {
		return "", err
	}
	e, err := domain.DecodeEvent(m.Data)
	if err != nil {
		return "", fmt.Errorf("email claim at seq %d: %w", m.Sequence, err)
	}
	return e.UserID, nil
}

// UserOfSession finds the user a session belongs to by scanning the log for
// its session_started event. Audit tools use it where no projection is at
// hand; it reads the whole stream.
func UserOfSession(ctx context.Context, stream jetstream.Stream, sessionID string) (string, error) {
	errFound := errors.New("found")
	var userID string
	err := History(ctx, stream, "", func(se StoredEvent) error {
		if se.Err == nil && se.Event.Type == domain.EventSessionStarted && se.Event.SessionID == sessionID {
			userID = se.Event.UserID
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return userID, nil
	}
	if err != nil {
		return "", err
	}
	return "", fmt.Errorf("session %s: %w", sessionID, ErrNotInLog)
}

// UserHistory is every message on a user's subject, readable or not.
func (s *Store) UserHistory(ctx context.Context, userID string) ([]StoredEvent, error) {
	var out []StoredEvent
	err := History(ctx, s.stream, UserSubject(userID), func(se StoredEvent) error {
		out = append(out, se)
		return nil
	})
	return out, err
}
