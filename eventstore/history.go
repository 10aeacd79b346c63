package eventstore

import (
	"context"
	"errors"
	"fmt"

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

// History reads one subject's messages in order (all of the stream's if
// subject is empty), decoded but not judged (see CheckedHistory).
func (s *Reader) History(ctx context.Context, subject string, fn func(StoredEvent) error) error {
	return s.Read(ctx, ReadOptions{Subject: subject}, func(r Record) error { return fn(Decode(r)) })
}

// ErrNotInLog means the log has nothing about the user, session or email.
var ErrNotInLog = ports.ErrNotInLog

// EmailHistory is an email's claims, each judged as a projection judges it
// (see CheckedHistory), and the user of the claim in force: the last
// authentic one. Claims append at the subject's version, so a later one
// lands only once the user of the one before was erased (or it lost no
// race: the first).
func (s *Reader) EmailHistory(ctx context.Context, email string) (string, []StoredEvent, error) {
	normalized, err := domain.NormalizeEmail(email)
	if err != nil {
		return "", nil, err
	}
	history, err := s.CheckedHistory(ctx, EmailSubject(domain.EmailHash(normalized)))
	if err != nil {
		return "", nil, err
	}
	userID := ""
	for _, se := range history {
		if se.Err == nil && se.Event.Type == domain.EventEmailClaimed {
			userID = se.Event.UserID
		}
	}
	if userID == "" {
		return "", nil, fmt.Errorf("email %s: %w", normalized, ErrNotInLog)
	}
	return userID, history, nil
}

// UserOfSession finds the user a session belongs to by scanning the log for
// its session_started event. Audit tools use it where no projection is at
// hand; it reads the whole stream. (A forged start may name another user;
// the as-of replay of that user's checked history then finds no session.)
func (s *Reader) UserOfSession(ctx context.Context, sessionID string) (string, error) {
	errFound := errors.New("found")
	var userID string
	err := s.History(ctx, "", func(se StoredEvent) error {
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

// UserHistory is every message on a user's subject and on its use subject
// (UseSubject), in stream order, each judged as a projection judges it (see
// CheckedHistory): whatever replays a user's history must see the uses
// recorded apart from it, or an as-of verdict would miss them.
func (s *Reader) UserHistory(ctx context.Context, userID string) ([]StoredEvent, error) {
	authenticate, err := s.authenticator(ctx)
	if err != nil {
		return nil, err
	}
	chained, err := checked(ctx, s.stream, UserSubject(userID), authenticate)
	if err != nil {
		return nil, err
	}
	uses, err := checkedUses(ctx, s.stream, userID, authenticate)
	if err != nil {
		return nil, err
	}
	return mergeBySeq(chained, uses), nil
}

// mergeBySeq merges two lists in stream order, each already in it.
func mergeBySeq(a, b []StoredEvent) []StoredEvent {
	if len(b) == 0 {
		return a
	}
	out := make([]StoredEvent, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].Seq < b[0].Seq {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}
