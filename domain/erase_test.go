package domain_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

func TestRegisterCarriesNoClearEmail(t *testing.T) {
	e, err := domain.Register("u1", "ann@example.com", "v1.c2VhbGVk", "hash", t0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Payload), "ann") {
		t.Fatalf("payload holds the email: %s", e.Payload)
	}
	p, err := domain.DecodePayload[domain.UserRegistered](roundTrip(t, e))
	if err != nil {
		t.Fatal(err)
	}
	if p.Hash() != domain.EmailHash("ann@example.com") || p.EmailSealed != "v1.c2VhbGVk" || p.Email != "" {
		t.Fatalf("payload %+v", p)
	}
	if _, err := domain.Register("u1", "ann@example.com", "ann@example.com", "hash", t0); err == nil {
		t.Fatal("the email was accepted as its own sealed form")
	}
	// An event from before sealing still decodes, and hashes its email.
	old := e
	old.Payload, _ = json.Marshal(map[string]string{"email": "bob@example.com", "password_hash": "h"})
	p, err = domain.DecodePayload[domain.UserRegistered](roundTrip(t, old))
	if err != nil || p.Hash() != domain.EmailHash("bob@example.com") {
		t.Fatalf("old payload: %+v, %v", p, err)
	}
}

func TestEraseRevokesLiveSessions(t *testing.T) {
	p := domain.DefaultPolicy()
	live := start(t, p, "u1", "s-live", true, false, t0)
	short := start(t, p, "u1", "s-short", false, false, t0) // 24 h
	at := t0.Add(48 * time.Hour)
	u := domain.NewUser("u1", "", "", []*domain.Session{live, short})
	if n := u.LiveSessions(at); n != 1 {
		t.Fatalf("LiveSessions = %d, want 1 (the 24 h session has expired)", n)
	}
	e, ok := u.Erase(domain.Principal{KeyID: "k1"}, at)
	if !ok || e.Type != domain.EventUserErased || e.UserID != "u1" {
		t.Fatalf("Erase = %+v, %v", e, ok)
	}
	e = roundTrip(t, e)
	if pl, _ := domain.DecodePayload[domain.UserErased](e); pl.By != "service_key:k1" {
		t.Fatalf("by = %q", pl.By)
	}
	for _, s := range []*domain.Session{live, short} {
		if err := s.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	if v := live.Verdict(at); v.Reason != domain.ReasonRevokedUserErased || !v.RevokedAt.Equal(at) {
		t.Fatalf("live session after erasure: %+v", v)
	}
	if v := short.Verdict(at); v.Reason != domain.ReasonExpiredMax {
		t.Fatalf("expired session after erasure: %+v (an erasure leaves dead sessions as they are)", v)
	}
	if _, ok := u.WithErased(true).Erase(domain.Principal{Operator: "cli"}, at); ok {
		t.Fatal("erasing an erased user decided another event")
	}
	// The as-of replay explains it.
	start := roundTrip(t, domain.NewUser("u2", "", "", nil).StartSession("s2", live.TokenHash(), "password", true, false, t0, p))
	erase, _ := domain.NewUser("u2", "", "", nil).Erase(domain.Principal{KeyID: "k1"}, t0.Add(time.Hour))
	erase.ID = "ev-erase"
	a, err := domain.SessionAsOf([]domain.Event{start, roundTrip(t, erase)}, "s2", t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if a.Verdict.Reason != domain.ReasonRevokedUserErased || !strings.Contains(a.Summary, "erased by service_key:k1") {
		t.Fatalf("as-of: %s / %s", a.Verdict.Reason, a.Summary)
	}
	if a, _ := domain.SessionAsOf([]domain.Event{start, roundTrip(t, erase)}, "s2", t0.Add(30*time.Minute)); !a.Verdict.Valid {
		t.Fatalf("as-of before the erasure: %+v", a.Verdict)
	}
}
