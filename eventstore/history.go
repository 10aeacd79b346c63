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

// EmailHistory is an email's claims, each judged as a projection judges it
// (see CheckedHistory), and the user of the first authentic one.
func (s *Reader) EmailHistory(ctx context.Context, email string) (string, []StoredEvent, error) {
	normalized, err := domain.NormalizeEmail(email)
	if err != nil {
		return "", nil, err
	}
	history, err := CheckedHistory(ctx, s.stream, EmailSubject(domain.EmailHash(normalized)), s.verifier)
	if err != nil {
		return "", nil, err
	}
	for _, se := range history {
		if se.Err == nil && se.Event.Type == domain.EventEmailClaimed {
			return se.Event.UserID, history, nil
		}
	}
	return "", nil, fmt.Errorf("email %s: %w", normalized, ErrNotInLog)
}

// UserOfSession finds the user a session belongs to by scanning the log for
// its session_started event. Audit tools use it where no projection is at
// hand; it reads the whole stream. (A forged start may name another user;
// the as-of replay of that user's checked history then finds no session.)
func (s *Reader) UserOfSession(ctx context.Context, sessionID string) (string, error) {
	stream := s.stream
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
