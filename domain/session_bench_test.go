package domain_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// benchT0 is the start of every benchmark session.
var benchT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// benchSession folds a real session_started event (keep logged in, default
// policy) into a session.
func benchSession(b *testing.B) *domain.Session {
	b.Helper()
	_, sid, hash, err := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
	if err != nil {
		b.Fatal(err)
	}
	u := domain.NewUser("bench-user", "bench@example.com", "hash", nil)
	e := u.StartSession(sid, hash, "password", true, false, benchT0, domain.DefaultPolicy())
	e.ID = "bench-event"
	s, err := domain.SessionFromEvent(e)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

var verdictSink domain.Verdict

// BenchmarkVerdict is the rule every validate evaluates, in each outcome.
func BenchmarkVerdict(b *testing.B) {
	b.Run("valid", func(b *testing.B) {
		s := benchSession(b)
		at := benchT0.Add(time.Hour)
		b.ReportAllocs()
		for b.Loop() {
			verdictSink = s.Verdict(at)
		}
		if !verdictSink.Valid {
			b.Fatal("want valid")
		}
	})
	b.Run("expired_idle", func(b *testing.B) {
		s := benchSession(b)
		at := benchT0.Add(31 * domain.Day)
		b.ReportAllocs()
		for b.Loop() {
			verdictSink = s.Verdict(at)
		}
		if verdictSink.Reason != domain.ReasonExpiredIdle {
			b.Fatalf("want idle expiry, got %q", verdictSink.Reason)
		}
	})
	b.Run("revoked", func(b *testing.B) {
		s := benchSession(b)
		out, err := domain.NewUser("bench-user", "bench@example.com", "hash", []*domain.Session{s}).Logout(s.ID(), benchT0.Add(time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Apply(out); err != nil {
			b.Fatal(err)
		}
		at := benchT0.Add(time.Hour)
		b.ReportAllocs()
		for b.Loop() {
			verdictSink = s.Verdict(at)
		}
		if verdictSink.Reason != domain.ReasonRevokedLogout {
			b.Fatalf("want logout, got %q", verdictSink.Reason)
		}
	})
}
