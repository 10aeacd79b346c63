package domain_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// TestLoginEvictsTheOldestLiveSessions: a login at the limit revokes the
// oldest live sessions in the same decision, dead sessions do not count,
// and the fold, live and as-of, explains it as revoked:session_limit.
func TestLoginEvictsTheOldestLiveSessions(t *testing.T) {
	p := domain.DefaultPolicy()
	p.MaxSessionsPerUser = 3
	old := start(t, p, "u1", "s-old", true, false, t0)
	mid := start(t, p, "u1", "s-mid", true, false, t0.Add(time.Minute))
	newer := start(t, p, "u1", "s-new", true, false, t0.Add(2*time.Minute))
	dead := start(t, p, "u1", "s-dead", false, false, t0.Add(-time.Hour)) // 24h max: dead at `at`, older than all
	at := t0.Add(24 * time.Hour)
	u := domain.NewUser("u1", "a@example.com", "hash", []*domain.Session{newer, dead, old, mid})

	var h domain.TokenHash
	events := u.Login("s-next", h, "password", true, false, at, p)
	if len(events) != 2 || events[0].Type != domain.EventSessionEvicted || events[0].SessionID != "s-old" || events[1].Type != domain.EventSessionStarted {
		t.Fatalf("Login at the limit decided %v, want session_evicted of s-old then session_started", types(events))
	}
	payload, err := domain.DecodePayload[domain.SessionEvicted](events[0])
	if err != nil || payload.BySessionID != "s-next" || payload.Limit != 3 {
		t.Fatalf("eviction payload %+v %v", payload, err)
	}
	for i := range events {
		events[i].ID = "ev-" + string(events[i].Type)
		events[i] = roundTrip(t, events[i])
	}
	for _, s := range []*domain.Session{old, mid, newer, dead} {
		for _, e := range events {
			if err := s.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[*domain.Session]domain.Reason{old: domain.ReasonRevokedSessionLimit, mid: domain.ReasonNone, newer: domain.ReasonNone, dead: domain.ReasonExpiredMax}
	for s, r := range want {
		if got := s.Current(at.Add(time.Second)).Reason; got != r {
			t.Errorf("%s after the login: %q, want %q", s.ID(), got, r)
		}
	}

	// Under the limit: no eviction. A lower limit evicts several, oldest first.
	if ev := u.Login("s-x", h, "password", true, false, at, domain.DefaultPolicy()); len(ev) != 1 {
		t.Errorf("under the limit: %v, want only session_started", types(ev))
	}
	// (u holds the sessions folded above: s-old is evicted already.)
	p.MaxSessionsPerUser = 1
	ev := u.Login("s-x", h, "password", true, false, at, p)
	if got := types(ev); len(ev) != 3 || ev[0].SessionID != "s-mid" || ev[1].SessionID != "s-new" || ev[2].SessionID != "s-x" {
		t.Errorf("limit 1: %v, want the two live sessions evicted oldest first", got)
	}

	// The audit replay folds the same events and names the eviction.
	var log []domain.Event
	for _, s := range []struct {
		id string
		at time.Time
	}{{"s-old", t0}, {"s-mid", t0.Add(time.Minute)}, {"s-new", t0.Add(2 * time.Minute)}} {
		e := domain.NewUser("u1", "a@example.com", "hash", nil).StartSession(s.id, h, "password", true, false, s.at, p)
		e.ID = "ev-start-" + s.id
		log = append(log, roundTrip(t, e))
	}
	log = append(log, events...)
	res, err := domain.SessionAsOf(log, "s-old", at.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict.Reason != domain.ReasonRevokedSessionLimit || res.Verdict.Reason.Detail() != "session_limit" ||
		!strings.Contains(res.Summary, "revoked: session_limit — session_evicted") || !strings.Contains(res.Summary, "limit of 3 live sessions") {
		t.Fatalf("as-of: %q %q", res.Verdict.Reason, res.Summary)
	}
	if last := res.Explanation[len(res.Explanation)-1]; last.Role != "revoked" || last.Event.Type != domain.EventSessionEvicted {
		t.Fatalf("explanation ends with %+v, want the eviction as the revoking event", last)
	}
	if before, _ := domain.SessionAsOf(log, "s-old", at.Add(-time.Second)); !before.Verdict.Valid {
		t.Fatalf("as-of before the eviction: %+v, want valid", before.Verdict)
	}
}

func TestPolicyNeedsASessionLimit(t *testing.T) {
	p := domain.DefaultPolicy()
	p.MaxSessionsPerUser = 0
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "max sessions per user") {
		t.Fatalf("a zero session limit: %v", err)
	}
}

func types(events []domain.Event) []domain.EventType {
	out := make([]domain.EventType, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}
