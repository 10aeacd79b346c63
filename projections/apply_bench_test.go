package projections_test

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/eventstoretest"
	"github.com/sessionledger/ledger/projections"
)

// benchLog builds stream records the way the command handlers write them:
// after the key introduction, sealed into each user's hash chain, signed,
// encoded, with consecutive sequences.
type benchLog struct {
	*eventstoretest.Log
	sessions []benchSessionRef
	at       time.Time
}

type benchSessionRef struct{ userID, sessionID string }

func newBenchLog(tb testing.TB) *benchLog {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return &benchLog{Log: eventstoretest.NewLog(tb, eventstoretest.Key(tb, 1), at), at: at}
}

func (l *benchLog) add(tb testing.TB, subject string, e domain.Event) {
	e.ID = fmt.Sprintf("bench-%d", len(l.Recs)+1)
	l.Add(tb, subject, e)
}

// users appends registrations of n events' worth of users, four sessions
// each, as the ledger's signups and logins would.
func (l *benchLog) users(tb testing.TB, events int) {
	policy := domain.DefaultPolicy()
	for u := 0; events > 0; u++ {
		uid := fmt.Sprintf("user-%d-%d", len(l.Recs), u)
		email := fmt.Sprintf("bench-%d-%d@example.com", len(l.Recs), u)
		subject := eventstore.UserSubject(uid)
		reg, err := domain.Register(uid, email, "", "argon2id-hash", l.at)
		if err != nil {
			tb.Fatal(err)
		}
		l.add(tb, subject, reg)
		events--
		user := domain.NewUser(uid, email, "argon2id-hash", nil)
		for k := 0; k < 4 && events > 0; k++ {
			_, sid, hash, err := domain.NewToken(rand.Reader)
			if err != nil {
				tb.Fatal(err)
			}
			l.at = l.at.Add(time.Millisecond)
			l.add(tb, subject, user.StartSession(sid, hash, "password", true, false, l.at, policy))
			l.sessions = append(l.sessions, benchSessionRef{uid, sid})
			events--
		}
	}
}

// uses appends n session_used events, round robin over the sessions.
func (l *benchLog) uses(tb testing.TB, n int) {
	for i := 0; i < n; i++ {
		s := l.sessions[i%len(l.sessions)]
		l.at = l.at.Add(time.Millisecond)
		l.add(tb, eventstore.UserSubject(s.userID), domain.SessionUse(s.userID, s.sessionID, l.at))
	}
}

func openBench(tb testing.TB, l *benchLog) *projections.Projection {
	p, err := projections.Open(tb.TempDir(), l.Ring(), nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

func applyAll(tb testing.TB, p *projections.Projection, recs []eventstore.Record, batch int) {
	for len(recs) > 0 {
		n := min(batch, len(recs))
		if err := p.ApplyBatch(recs[:n]); err != nil {
			tb.Fatal(err)
		}
		recs = recs[n:]
	}
}

// catchUpBatch is the batch size of Projection.CatchUp.
const catchUpBatch = 2048

// BenchmarkApplyBatch folds encoded events into a real Pebble projection:
// signups and logins in catch-up batches (what rebuild does), uses in
// catch-up batches, and uses one per batch (what the live subscription
// does). One op is one event.
func BenchmarkApplyBatch(b *testing.B) {
	b.Run("started_catchup", func(b *testing.B) {
		l := newBenchLog(b)
		p := openBench(b, l)
		applyAll(b, p, l.Recs, 1) // the key introduction
		seeded := len(l.Recs)
		l.users(b, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		applyAll(b, p, l.Recs[seeded:], catchUpBatch)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	for _, c := range []struct {
		name  string
		batch int
	}{{"used_catchup", catchUpBatch}, {"used_live", 1}} {
		b.Run(c.name, func(b *testing.B) {
			l := newBenchLog(b)
			p := openBench(b, l)
			l.users(b, 12_500) // 10k sessions
			applyAll(b, p, l.Recs, catchUpBatch)
			seeded := len(l.Recs)
			l.uses(b, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			applyAll(b, p, l.Recs[seeded:], c.batch)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkSessionLookup is the projection's share of a validate: one
// Pebble get and the session decode, over 10k sessions.
func BenchmarkSessionLookup(b *testing.B) {
	l := newBenchLog(b)
	p := openBench(b, l)
	l.users(b, 12_500)
	applyAll(b, p, l.Recs, catchUpBatch)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s := l.sessions[i%len(l.sessions)]
		i++
		if _, err := p.Session(s.sessionID); err != nil {
			b.Fatal(err)
		}
	}
}
