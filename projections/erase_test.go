package projections_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// TestErasureFold: user_erased revokes the user's live sessions (with
// entries in the revocation feed), frees the email (index and claim), and
// a new claim and registration of the email then apply; the email index
// is keyed by the email's hash, so logins never need the email itself.
func TestErasureFold(t *testing.T) {
	l := newUserLog(t)
	p := domain.DefaultPolicy()
	email := "a@example.com"
	l.Add(t, eventstore.EmailSubject(domain.EmailHash(email)), domain.ClaimEmail("u1", email, t0))
	s1 := l.start(t, t0.Add(time.Minute), p)
	s2 := l.start(t, t0.Add(2*time.Minute), p)
	l.add(t, logout("u1", s1, t0.Add(3*time.Minute)))
	proj := open(t, t.TempDir(), l.Ring())
	defer proj.Close()
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	if uid, _, err := proj.Credentials(email); err != nil || uid != "u1" {
		t.Fatalf("Credentials before erasure: %q, %v", uid, err)
	}
	u, _, _ := proj.LoadUser("u1")
	erase, ok := u.Erase(domain.Principal{KeyID: "k1"}, t0.Add(time.Hour))
	if !ok {
		t.Fatal("no erasure decided")
	}
	l.add(t, erase)
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	for sid, want := range map[string]domain.Reason{s1: domain.ReasonRevokedLogout, s2: domain.ReasonRevokedUserErased} {
		s, err := proj.Session(sid)
		if err != nil {
			t.Fatal(err)
		}
		if v := s.Current(t0.Add(2 * time.Hour)); v.Reason != want {
			t.Fatalf("session %s: %s, want %s", sid, v.Reason, want)
		}
	}
	revs, err := proj.Revocations(0, "", 10)
	if err != nil || len(revs) != 2 || revs[1].SessionID != s2 || revs[1].Reason != string(domain.ReasonRevokedUserErased) {
		t.Fatalf("revocation feed: %+v, %v", revs, err)
	}
	if _, _, err := proj.Credentials(email); !errors.Is(err, domain.ErrUserNotFound) {
		t.Fatalf("Credentials after erasure: %v", err)
	}
	if _, err := proj.ClaimedUser(domain.EmailHash(email)); !errors.Is(err, domain.ErrUserNotFound) {
		t.Fatalf("ClaimedUser after erasure: %v", err)
	}
	u, _, err = proj.LoadUser("u1")
	if err != nil || u == nil || !u.Erased() || u.PasswordHash() != "" {
		t.Fatalf("erased user: %+v, %v", u, err)
	}
	if _, again := u.Erase(domain.Principal{KeyID: "k1"}, t0.Add(2*time.Hour)); again {
		t.Fatal("an erased user decided another erasure")
	}
	// The same email, a new user.
	l.Add(t, eventstore.EmailSubject(domain.EmailHash(email)), domain.ClaimEmail("u2", email, t0.Add(2*time.Hour)))
	reg, err := domain.Register("u2", email, "v1.other", "hash2", t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	l.Add(t, eventstore.UserSubject("u2"), reg)
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	if uid, hash, err := proj.Credentials(email); err != nil || uid != "u2" || hash != "hash2" {
		t.Fatalf("Credentials of the new account: %q %q, %v", uid, hash, err)
	}
	if uid, err := proj.ClaimedUser(domain.EmailHash(email)); err != nil || uid != "u2" {
		t.Fatalf("ClaimedUser of the new account: %q, %v", uid, err)
	}
}

// TestClearEmailRegistrationStillFolds: a user_registered from before
// sealing (email in clear) folds into the hash-keyed index.
func TestClearEmailRegistrationStillFolds(t *testing.T) {
	l := newUserLog(t) // u1, sealed
	old, _ := domain.Register("u3", "old@example.com", "", "h3", t0)
	old.Payload, _ = json.Marshal(map[string]string{"email": "old@example.com", "password_hash": "h3"})
	l.Add(t, eventstore.UserSubject("u3"), old)
	proj := open(t, t.TempDir(), l.Ring())
	defer proj.Close()
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	if uid, hash, err := proj.Credentials("old@example.com"); err != nil || uid != "u3" || hash != "h3" {
		t.Fatalf("Credentials of an old registration: %q %q, %v", uid, hash, err)
	}
	if d, _, _ := proj.Rejected(10); len(d) > 0 {
		t.Fatalf("rejected: %+v", d)
	}
}
