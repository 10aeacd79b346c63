package domain_test

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/sessionledger/ledger/domain"
)

func TestTokenRoundTrip(t *testing.T) {
	raw, sid, hash, err := domain.NewToken(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != domain.TokenLen || !domain.IsSessionID(sid) || !strings.Contains(raw, sid) {
		t.Fatalf("token %q session %q: bad shape", raw, sid)
	}
	gotSID, gotHash, err := domain.ParseToken(raw)
	if err != nil || gotSID != sid || !gotHash.Equal(hash) {
		t.Fatalf("ParseToken = %q %x %v", gotSID, gotHash, err)
	}
	if hash == sha256.Sum256([]byte(raw)) {
		t.Fatal("hash must cover the secret part only")
	}
	back, err := domain.ParseTokenHash(hash.String())
	if err != nil || back != hash {
		t.Fatalf("ParseTokenHash(%s) = %x %v", hash, back, err)
	}
	raw2, _, hash2, _ := domain.NewToken(rand.Reader)
	if raw2 == raw || hash2.Equal(hash) {
		t.Fatal("two tokens collided")
	}
}

func TestParseTokenRejects(t *testing.T) {
	raw, _, _, _ := domain.NewToken(rand.Reader)
	for name, bad := range map[string]string{
		"empty":            "",
		"short":            raw[:len(raw)-1],
		"long":             raw + "A",
		"wrong prefix":     "xyz_" + raw[4:],
		"upper-case sid":   raw[:4] + strings.ToUpper(raw[4:36]) + raw[36:],
		"bad base64":       raw[:len(raw)-1] + "*",
		"non-zero padding": raw[:len(raw)-1] + "_", // last char carries 2 spare bits
	} {
		if _, _, err := domain.ParseToken(bad); !errors.Is(err, domain.ErrMalformedToken) {
			t.Errorf("%s: err %v, want ErrMalformedToken", name, err)
		}
	}
}

func TestNormalizeEmail(t *testing.T) {
	for in, want := range map[string]string{
		"Ann@Example.COM":      "ann@example.com",
		"  bob@example.org  ":  "bob@example.org",
		"a.b+c@sub.example.io": "a.b+c@sub.example.io",
	} {
		got, err := domain.NormalizeEmail(in)
		if err != nil || got != want {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ann", "ann@", "@example.com", "ann@localhost", "Ann <ann@example.com>", "a b@example.com", "ann@example.", strings.Repeat("a", 250) + "@example.com"} {
		if _, err := domain.NormalizeEmail(bad); !errors.Is(err, domain.ErrInvalidEmail) {
			t.Errorf("NormalizeEmail(%q): err %v, want ErrInvalidEmail", bad, err)
		}
	}
}

func TestValidatePassword(t *testing.T) {
	if err := domain.ValidatePassword("1234567"); !errors.Is(err, domain.ErrWeakPassword) {
		t.Error("7 characters accepted")
	}
	if err := domain.ValidatePassword("12345678"); err != nil {
		t.Errorf("8 characters rejected: %v", err)
	}
	if err := domain.ValidatePassword(strings.Repeat("x", domain.MaxPasswordLen+1)); !errors.Is(err, domain.ErrWeakPassword) {
		t.Error("over-long password accepted")
	}
}
