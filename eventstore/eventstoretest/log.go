// Package eventstoretest builds ledger logs for tests, the way the ledger
// writes them: a key introduction first, then events sealed into each
// subject's chain and signed, with consecutive stream sequences. It holds
// no NATS: records go straight to a projection or into a stream the test
// publishes them to.
package eventstoretest

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// Key returns a deterministic signing key; different n, different keys.
func Key(tb testing.TB, n byte) domain.SigningKey {
	tb.Helper()
	k, err := domain.NewSigningKey(bytes.Repeat([]byte{n}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// Log is a growing list of stored records.
type Log struct {
	Key   domain.SigningKey
	Recs  []eventstore.Record
	heads map[string]string
	at    time.Time
}

// NewLog starts a log whose first record introduces key.
func NewLog(tb testing.TB, key domain.SigningKey, at time.Time) *Log {
	tb.Helper()
	l := &Log{Key: key, heads: map[string]string{}, at: at}
	l.Add(tb, eventstore.KeysSubject, domain.IntroduceKey(key, at))
	return l
}

// Ring is a key ring holding the log's key.
func (l *Log) Ring() *domain.Keyring { return domain.NewKeyring(l.Key) }

// Add seals e after its subject's last event, signs it with the log's key
// (giving it an id if it has none) and appends it.
func (l *Log) Add(tb testing.TB, subject string, e domain.Event) eventstore.Record {
	tb.Helper()
	return l.AddSigned(tb, subject, e, l.Key)
}

// AddSigned is Add with another key: a forger's, or a retired one.
func (l *Log) AddSigned(tb testing.TB, subject string, e domain.Event, k domain.SigningKey) eventstore.Record {
	tb.Helper()
	if e.ID == "" {
		e.ID = fmt.Sprintf("ev-%d", len(l.Recs)+1)
	}
	if err := e.Seal(l.heads[subject], k); err != nil {
		tb.Fatal(err)
	}
	data, err := e.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	if k.ID() == l.Key.ID() {
		l.heads[subject] = e.Hash
	}
	return l.Raw(subject, data, e.Time)
}

// Raw appends a message as is.
func (l *Log) Raw(subject string, data []byte, stored time.Time) eventstore.Record {
	r := eventstore.Record{Seq: uint64(len(l.Recs) + 1), Subject: subject, Data: data, Stored: stored}
	l.Recs = append(l.Recs, r)
	return r
}

// Head is the hash of the subject's last event signed with the log's key.
func (l *Log) Head(subject string) string { return l.heads[subject] }

// Rotate appends a rotation to next, signed by the key in force, and signs
// what follows with next.
func (l *Log) Rotate(tb testing.TB, next domain.SigningKey, at time.Time) eventstore.Record {
	tb.Helper()
	r := l.Add(tb, eventstore.KeysSubject, domain.RotateKey(l.Key.ID(), next, at))
	l.Key = next
	return r
}

// AddUse appends a use the way the ledger records one now: on its user's
// use subject, sealed with no predecessor (see domain.JudgeUse), signed
// with the log's key.
func (l *Log) AddUse(tb testing.TB, e domain.Event) eventstore.Record {
	tb.Helper()
	return l.AddStandalone(tb, eventstore.UseSubject(e.UserID), e, l.Key)
}

// AddStandalone seals e with no predecessor, signs it with k and appends it
// to subject, leaving every subject's head as it was.
func (l *Log) AddStandalone(tb testing.TB, subject string, e domain.Event, k domain.SigningKey) eventstore.Record {
	tb.Helper()
	if e.ID == "" {
		e.ID = fmt.Sprintf("ev-%d", len(l.Recs)+1)
	}
	if err := e.Seal("", k); err != nil {
		tb.Fatal(err)
	}
	data, err := e.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	return l.Raw(subject, data, e.Time)
}
