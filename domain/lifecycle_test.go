package domain_test

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// TestPasswordChangeRevokesOthers: password_changed with
// revoke_other_sessions revokes every other live session
// (revoked:password_changed) and keeps the caller's; the as-of audit names
// the event.
func TestPasswordChangeRevokesOthers(t *testing.T) {
	p := domain.DefaultPolicy()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	a := start(t, p, "u1", strings.Repeat("a", 32), true, false, t0)
	b := start(t, p, "u1", strings.Repeat("b", 32), true, false, t0.Add(time.Second))
	u := domain.NewUser("u1", "a@example.com", "old", []*domain.Session{a, b})
	if _, _, err := u.ChangePassword(a.ID(), "other", "new", true, t0.Add(time.Minute)); err != domain.ErrPasswordMoved {
		t.Fatalf("a moved password: %v", err)
	}
	e, n, err := u.ChangePassword(a.ID(), "old", "new", true, t0.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("change: %d %v", n, err)
	}
	e = roundTrip(t, e)
	for _, s := range []*domain.Session{a, b} {
		if err := s.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	if v := a.Verdict(t0.Add(time.Hour)); !v.Valid {
		t.Fatalf("caller's session: %+v", v)
	}
	if v := b.Verdict(t0.Add(time.Hour)); v.Reason != domain.ReasonRevokedPasswordChanged {
		t.Fatalf("other session: %+v", v)
	}
}

// TestChallengeTriesAndExpiry: a code matches once; wrong answers count as
// tries and towards the throttle; after MaxTries, or past expiry, even the
// right code fails; a request within RequestEvery is refused.
func TestChallengeTriesAndExpiry(t *testing.T) {
	r := domain.DefaultChallengeRules()
	key := bytes.Repeat([]byte{1}, 32)
	keys := func(kid string) ([]byte, bool) { return key, kid == "k1" }
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	u := domain.NewUser("u1", "a@example.com", "h", nil).WithChallenges(nil)
	code, link, secrets, err := domain.NewChallenge(rand.Reader, domain.PurposePasswordReset, "k1", key)
	if err != nil || !domain.IsChallengeCode(code) || !strings.HasPrefix(link, domain.ResetLinkPrefix) {
		t.Fatalf("challenge %q %q: %v", code, link, err)
	}
	if strings.Contains(secrets.CodeHash, code) || secrets.CodeHash == domain.ChallengeCodeHash(bytes.Repeat([]byte{2}, 32), secrets.ID, code) {
		t.Fatal("the code hash does not depend on the key")
	}
	req, err := u.RequestChallenge(domain.PurposePasswordReset, secrets, t0, r)
	if err != nil {
		t.Fatal(err)
	}
	cs := map[domain.Purpose]domain.Challenge{}
	fold := func(es ...domain.Event) {
		for _, e := range es {
			if _, err := domain.FoldChallenges(cs, roundTrip(t, e)); err != nil {
				t.Fatal(err)
			}
		}
		var list []domain.Challenge
		for _, c := range cs {
			list = append(list, c)
		}
		u = u.WithChallenges(list)
	}
	fold(req)
	if _, err := u.RequestChallenge(domain.PurposePasswordReset, secrets, t0.Add(30*time.Second), r); err != domain.ErrChallengeTooSoon {
		t.Fatalf("second request within a minute: %v", err)
	}
	wrong := "000000"
	if wrong == code {
		wrong = "000001"
	}
	answer := func(c string, at time.Time) ([]domain.Event, bool) {
		_, failed, ok := u.AnswerChallenge(domain.ChallengeAnswer{Purpose: domain.PurposePasswordReset, Via: domain.ViaCode, Code: c, Key: keys, EmailHash: domain.EmailHash("a@example.com")}, at, domain.DefaultLoginThrottle())
		return failed, ok
	}
	if _, ok := answer(code, t0.Add(r.ResetTTL)); ok {
		t.Fatal("the code works at its expiry")
	}
	if _, ok := answer(code, t0.Add(time.Minute)); !ok {
		t.Fatal("the right code fails")
	}
	_, pid, h, err := domain.ParseLinkToken(link)
	if err != nil || pid != secrets.ID {
		t.Fatalf("parse link: %v", err)
	}
	if _, _, ok := u.AnswerChallenge(domain.ChallengeAnswer{Purpose: domain.PurposePasswordReset, Via: domain.ViaLink, LinkID: pid, LinkSecret: h}, t0.Add(time.Minute), domain.DefaultLoginThrottle()); !ok {
		t.Fatal("the right link fails")
	}
	for i := 0; i < r.MaxTries; i++ {
		failed, ok := answer(wrong, t0.Add(time.Minute))
		if ok {
			t.Fatal("a wrong code passes")
		}
		p, _ := domain.DecodePayload[domain.LoginFailed](failed[0])
		if p.Reason != domain.LoginFailedWrongCode || p.ChallengeID != secrets.ID {
			t.Fatalf("failure %+v", p)
		}
		fold(failed...)
	}
	if _, ok := answer(code, t0.Add(time.Minute)); ok {
		t.Fatal("the right code works after 5 wrong tries")
	}
	if c, _ := u.Challenge(domain.PurposePasswordReset); c.Tries != r.MaxTries {
		t.Fatalf("tries %d", c.Tries)
	}
	// Used up by a reset: single use.
	code2, _, s2, _ := domain.NewChallenge(rand.Reader, domain.PurposePasswordReset, "k1", key)
	req2, err := u.RequestChallenge(domain.PurposePasswordReset, s2, t0.Add(2*time.Minute), r)
	if err != nil {
		t.Fatal(err)
	}
	fold(req2)
	c, _, ok := u.AnswerChallenge(domain.ChallengeAnswer{Purpose: domain.PurposePasswordReset, Via: domain.ViaCode, Code: code2, Key: keys}, t0.Add(3*time.Minute), domain.DefaultLoginThrottle())
	if !ok {
		t.Fatal("new code fails")
	}
	fold(u.ResetPassword(c, domain.ViaCode, "new", t0.Add(3*time.Minute)))
	if _, _, ok := u.AnswerChallenge(domain.ChallengeAnswer{Purpose: domain.PurposePasswordReset, Via: domain.ViaCode, Code: code2, Key: keys}, t0.Add(3*time.Minute), domain.DefaultLoginThrottle()); ok {
		t.Fatal("a used code works again")
	}
}
