package domain_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

func TestKeyShapes(t *testing.T) {
	sk, h, err := domain.NewServiceKey(bytes.NewReader(bytes.Repeat([]byte{9}, 32)))
	if err != nil || !domain.IsServiceKey(sk) || domain.IsAppKey(sk) || h != domain.HashKey(sk) || !h.Equal(domain.HashKey(sk)) {
		t.Fatalf("service key %q: %v", sk, err)
	}
	pk, _, _ := domain.NewAppKey(bytes.NewReader(bytes.Repeat([]byte{9}, 32)))
	if !domain.IsAppKey(pk) || domain.IsServiceKey(pk) || !strings.HasPrefix(pk, "pk_live_") {
		t.Fatalf("app key %q", pk)
	}
	for _, bad := range []string{"", "sk_live_", sk + "A", sk[:len(sk)-1], strings.Replace(sk, "sk_", "SK_", 1), sk[:len(sk)-1] + "!"} {
		if domain.IsServiceKey(bad) {
			t.Errorf("%q passes as a service key", bad)
		}
	}
	back, err := domain.ParseKeyHash(h.String())
	if err != nil || back != h {
		t.Fatalf("key hash round trip: %v", err)
	}
}

func TestScopesAndRoles(t *testing.T) {
	s, err := domain.ParseScopes([]string{"audit", "admin"})
	if err != nil || len(s) != 2 || s[0] != domain.ScopeAdmin {
		t.Fatalf("scopes %v: %v", s, err)
	}
	for _, bad := range [][]string{nil, {"root"}, {"audit", "audit"}} {
		if _, err := domain.ParseScopes(bad); !errors.Is(err, domain.ErrInvalidScope) {
			t.Errorf("scopes %v: %v", bad, err)
		}
	}
	if !domain.RoleAdmin.AtLeast(domain.RoleUser) || domain.RoleGuest.AtLeast(domain.RoleUser) || !domain.Role("").AtLeast(domain.RoleUser) {
		t.Fatal("role ranks")
	}
	u := domain.NewUser("u1", "a@example.com", "h", nil)
	by := domain.Principal{KeyID: domain.BootstrapKeyID}
	if _, ok, err := u.ChangeRole(domain.RoleUser, by, t0); ok || err != nil {
		t.Fatal("changing to the same role is an event")
	}
	if _, _, err := u.ChangeRole("root", by, t0); !errors.Is(err, domain.ErrInvalidRole) {
		t.Fatalf("bad role: %v", err)
	}
	e, ok, err := u.ChangeRole(domain.RoleAdmin, by, t0)
	if !ok || err != nil {
		t.Fatal(err)
	}
	r, err := domain.ApplyRole(domain.RoleUser, roundTrip(t, e))
	p, _ := domain.DecodePayload[domain.UserRoleChanged](e)
	if err != nil || r != domain.RoleAdmin || p.Previous != domain.RoleUser || p.By != "service_key:bootstrap" {
		t.Fatalf("folded role %s, payload %+v: %v", r, p, err)
	}
}

// TestRevocationByAdmin: folded by Session.Apply into revoked:admin, named
// by the as-of explanation with who decided and why; a dead session is
// left alone.
func TestRevocationByAdmin(t *testing.T) {
	p := domain.DefaultPolicy()
	s := start(t, p, "u1", "s1", true, false, t0)
	dead := start(t, p, "u1", "s2", false, false, t0)
	u := domain.NewUser("u1", "a@example.com", "h", []*domain.Session{s, dead})
	by := domain.Principal{UserID: "boss"}
	at := t0.Add(48 * time.Hour) // s2 (24 h) has expired
	if _, ok, err := u.RevokeByAdmin("s2", "", "", by, at); ok || err != nil {
		t.Fatalf("revoking an expired session: %v %v", ok, err)
	}
	if _, _, err := u.RevokeByAdmin("nope", "", "", by, at); !errors.Is(err, domain.ErrSessionNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
	if _, _, err := u.RevokeByAdmin("s1", "", strings.Repeat("x", 1001), by, at); !errors.Is(err, domain.ErrInvalidNote) {
		t.Fatalf("long note: %v", err)
	}
	all, err := u.RevokeAllByAdmin("desk", "", by, at)
	if err != nil || len(all) != 1 || all[0].SessionID != "s1" {
		t.Fatalf("revoke all: %v %v", all, err)
	}
	e, ok, err := u.RevokeByAdmin("s1", "support desk", "ticket 42", by, at)
	if !ok || err != nil {
		t.Fatal(err)
	}
	e = roundTrip(t, e)
	e.ID = "ev-admin"
	start := roundTrip(t, domain.NewUser("u1", "", "", nil).StartSession("s1", s.TokenHash(), "password", true, false, t0, p))
	start.ID = "ev-start"
	res, err := domain.SessionAsOf([]domain.Event{start, e}, "s1", at)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict.Reason != domain.ReasonRevokedAdmin || res.Verdict.Reason.Detail() != "admin" || len(res.Explanation) != 2 ||
		!strings.Contains(res.Summary, "user:boss") || !strings.Contains(res.Summary, `"ticket 42"`) {
		t.Fatalf("as-of: %+v", res)
	}
	if before, _ := domain.SessionAsOf([]domain.Event{start, e}, "s1", at.Add(-time.Second)); !before.Verdict.Valid {
		t.Fatal("valid before the revocation")
	}
}
