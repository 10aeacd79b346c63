package domain_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

func key(t *testing.T, b byte) domain.SigningKey {
	t.Helper()
	k, err := domain.NewSigningKey(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sealed(t *testing.T, e domain.Event, id, prev string, k domain.SigningKey) domain.Event {
	t.Helper()
	e.ID = id
	if err := e.Seal(prev, k); err != nil {
		t.Fatal(err)
	}
	return roundTrip(t, e)
}

// TestKeyChain folds a ledger's key history and checks which events count,
// with both verifiers: the instance's MAC keyring and the auditor's
// signature check.
func TestKeyChain(t *testing.T) {
	k1, k2, forger := key(t, 1), key(t, 2), key(t, 9)
	intro := sealed(t, domain.IntroduceKey(k1, t0), "e1", "", k1)
	use1 := sealed(t, domain.SessionUse("u", "s", t0), "e2", "", k1)
	rot := sealed(t, domain.RotateKey(k1.ID(), k2, t0), "e3", intro.Hash, k1)
	use2 := sealed(t, domain.SessionUse("u", "s", t0.Add(time.Second)), "e4", use1.Hash, k2)
	late1 := sealed(t, domain.SessionUse("u", "s", t0.Add(2*time.Second)), "e5", use2.Hash, k1) // the retired key
	forged := sealed(t, domain.SessionUse("u", "s", t0.Add(2*time.Second)), "e6", use2.Hash, forger)
	// A forger who copies the key id of the key in force but not its secret.
	copied := forged
	copied.KeyID = k2.ID()
	copied.Hash, _ = copied.ComputeHash()

	verifiers := map[string]domain.Verifier{
		"mac (instance)":       domain.NewKeyring(k1, k2),
		"signature (auditor)":  domain.SignatureVerifier{},
		"mac, key order mixed": domain.NewKeyring(k2, k1),
	}
	for name, v := range verifiers {
		t.Run(name, func(t *testing.T) {
			var c domain.KeyChain
			steps := []struct {
				e    domain.Event
				want error
			}{
				{use1, domain.ErrNotAuthentic}, // before any key is introduced
				{intro, nil},
				{sealed(t, domain.IntroduceKey(forger, t0), "x", "", forger), domain.ErrNotAuthentic}, // a second introduction
				{use1, nil},
				{forged, domain.ErrNotAuthentic},
				{rot, nil},
				{use2, nil},
				{late1, domain.ErrNotAuthentic}, // retired for good
				{copied, domain.ErrNotAuthentic},
				{unsigned(use2), domain.ErrNotAuthentic},
			}
			for i, s := range steps {
				err := c.Authenticate(s.e, v)
				if (s.want == nil) != (err == nil) || (s.want != nil && !errors.Is(err, s.want)) {
					t.Fatalf("step %d (%s %s): err %v, want %v", i, s.e.Type, s.e.ID, err, s.want)
				}
			}
			if c.Active != k2.ID() || len(c.Order) != 2 {
				t.Fatalf("chain after rotation: active %s, %d keys; want %s and 2", c.Active, len(c.Order), k2.ID())
			}
			// Trusting either key of the chain anchors all of it; a
			// stranger's key anchors nothing.
			if !c.Anchored([]domain.PublicKey{k1.Public()}) || !c.Anchored([]domain.PublicKey{k2.Public()}) || c.Anchored([]domain.PublicKey{forger.Public()}) {
				t.Fatal("Anchored does not follow the chain")
			}
			restored, err := domain.KeyChainFromState(c.State())
			if err != nil || restored.Active != c.Active || len(restored.Order) != 2 {
				t.Fatalf("restored chain: %+v %v", restored, err)
			}
		})
	}
}

func TestKeyChainWaitsForAKeyItDoesNotHold(t *testing.T) {
	k1, k2 := key(t, 1), key(t, 2)
	var c domain.KeyChain
	ring := domain.NewKeyring(k1) // k2 not handed to this instance yet
	for _, e := range []domain.Event{
		sealed(t, domain.IntroduceKey(k1, t0), "e1", "", k1),
		sealed(t, domain.RotateKey(k1.ID(), k2, t0), "e2", "", k1),
	} {
		if err := c.Authenticate(e, ring); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Authenticate(sealed(t, domain.SessionUse("u", "s", t0), "e3", "", k2), ring)
	if !errors.Is(err, domain.ErrKeyUnavailable) || errors.Is(err, domain.ErrNotAuthentic) {
		t.Fatalf("event under a key in force that the instance lacks: err %v, want ErrKeyUnavailable only", err)
	}
}

func TestRotationNeedsTheNewKeysProof(t *testing.T) {
	k1, k2, other := key(t, 1), key(t, 2), key(t, 3)
	var c domain.KeyChain
	if err := c.Authenticate(sealed(t, domain.IntroduceKey(k1, t0), "e1", "", k1), domain.SignatureVerifier{}); err != nil {
		t.Fatal(err)
	}
	// A rotation whose proof was made by another key than the one it names.
	bad := domain.RotateKey(k1.ID(), k2, t0)
	p, _ := domain.DecodePayload[domain.SigningKeyRotated](domain.RotateKey(k1.ID(), other, t0))
	good, _ := domain.DecodePayload[domain.SigningKeyRotated](bad)
	good.Proof = p.Proof
	bad.Payload = mustMarshal(t, good)
	if err := c.Authenticate(sealed(t, bad, "e2", "", k1), domain.SignatureVerifier{}); !errors.Is(err, domain.ErrNotAuthentic) {
		t.Fatalf("rotation with a foreign proof: err %v, want ErrNotAuthentic", err)
	}
}

func TestTamperedEventFailsBothChecks(t *testing.T) {
	k := key(t, 1)
	e := sealed(t, domain.SessionUse("u", "s", t0), "e1", "", k)
	e.Time = e.Time.Add(-time.Hour) // content changed, hash and signatures kept
	if err := e.CheckHash(); !errors.Is(err, domain.ErrHashMismatch) {
		t.Fatalf("CheckHash after tampering: %v", err)
	}
	e.Hash, _ = e.ComputeHash() // re-hashed by someone without the key
	if err := domain.NewKeyring(k).Verify(e, k.Public()); !errors.Is(err, domain.ErrNotAuthentic) {
		t.Fatalf("MAC after re-hashing: %v", err)
	}
	if err := domain.VerifySignature(e, k.Public()); !errors.Is(err, domain.ErrNotAuthentic) {
		t.Fatalf("signature after re-hashing: %v", err)
	}
}

func unsigned(e domain.Event) domain.Event {
	e.MAC, e.Sig = "", ""
	return e
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJudge(t *testing.T) {
	k := key(t, 1)
	e := sealed(t, domain.SessionUse("u", "s", t0), "e1", "head", k)
	ok := func(domain.Event) error { return nil }
	altered := e
	altered.Time = altered.Time.Add(time.Second)
	cases := []struct {
		name   string
		e      domain.Event
		head   string
		auth   func(domain.Event) error
		reason string
		unsure bool
	}{
		{"authentic", e, "head", ok, "", false},
		{"altered", altered, "head", ok, domain.RejectHash, false},
		{"unlinked", e, "other", ok, domain.RejectChain, false},
		{"forged", e, "head", func(domain.Event) error { return domain.ErrNotAuthentic }, domain.RejectSignature, false},
		{"key not held", e, "head", func(domain.Event) error { return domain.ErrKeyUnavailable }, "", true},
	}
	for _, c := range cases {
		reason, err := domain.Judge(c.e, c.head, c.auth)
		if reason != c.reason || (err != nil) != (c.reason != "" || c.unsure) {
			t.Errorf("%s: reason %q, err %v; want %q", c.name, reason, err, c.reason)
		}
	}
}

// TestJudgeUse: a use subject takes standalone, authentic uses of its own
// user, and nothing else; the rules are checked before authentication, so
// that nothing but a use ever reaches the key chain from there.
func TestJudgeUse(t *testing.T) {
	k := key(t, 1)
	use := sealed(t, domain.SessionUse("u", "s", t0), "e1", "", k)
	linked := sealed(t, domain.SessionUse("u", "s", t0), "e2", "head", k)
	asLogout := domain.SessionUse("u", "s", t0)
	asLogout.Type = domain.EventSessionLoggedOut
	logout := sealed(t, asLogout, "e3", "", k)
	noSession := sealed(t, domain.SessionUse("u", "", t0), "e4", "", k)
	altered := use
	altered.Time = altered.Time.Add(time.Second)
	ok := func(domain.Event) error { return nil }
	authCalled := false
	spy := func(domain.Event) error { authCalled = true; return nil }
	cases := []struct {
		name   string
		e      domain.Event
		user   string
		auth   func(domain.Event) error
		reason string
		unsure bool
	}{
		{"authentic use", use, "u", ok, "", false},
		{"altered", altered, "u", ok, domain.RejectHash, false},
		{"linked", linked, "u", ok, domain.RejectChain, false},
		{"not a use", logout, "u", spy, domain.RejectInvalid, false},
		{"another user's use", use, "v", spy, domain.RejectInvalid, false},
		{"no session", noSession, "u", spy, domain.RejectInvalid, false},
		{"forged", use, "u", func(domain.Event) error { return domain.ErrNotAuthentic }, domain.RejectSignature, false},
		{"key not held", use, "u", func(domain.Event) error { return domain.ErrKeyUnavailable }, "", true},
	}
	for _, c := range cases {
		reason, err := domain.JudgeUse(c.e, c.e.CheckHash(), c.user, c.auth)
		if reason != c.reason || (err != nil) != (c.reason != "" || c.unsure) {
			t.Errorf("%s: reason %q, err %v; want %q", c.name, reason, err, c.reason)
		}
	}
	if authCalled {
		t.Error("an event the use subject's rules refuse was authenticated (and could have reached the key chain)")
	}
}
