package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// StoredEvent is an event as read back from the log (see ports.StoredEvent).
type StoredEvent = ports.StoredEvent

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
var ErrNotInLog = ports.ErrNotInLog

// UserOfEmail finds the user an email was claimed for: the first authentic
// claim on the email's subject.
func (s *Reader) UserOfEmail(ctx context.Context, email string) (string, error) {
	normalized, err := domain.NormalizeEmail(email)
	if err != nil {
		return "", err
	}
	history, err := CheckedHistory(ctx, s.stream, EmailSubject(domain.EmailHash(normalized)), s.verifier)
	if err != nil {
		return "", err
	}
	for _, se := range history {
		if se.Err == nil && se.Event.Type == domain.EventEmailClaimed {
			return se.Event.UserID, nil
		}
	}
	return "", fmt.Errorf("email %s: %w", normalized, ErrNotInLog)
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

// UserHistory is every message on a user's subject, each judged as a
// projection judges it (see CheckedHistory).
func (s *Reader) UserHistory(ctx context.Context, userID string) ([]StoredEvent, error) {
	return CheckedHistory(ctx, s.stream, UserSubject(userID), s.verifier)
}
