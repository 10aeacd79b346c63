package domain_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/sessionledger/ledger/domain"
)

// Fuzz targets; their seed corpora are in testdata/fuzz/<name>. .ci/run
// fuzzes each for a few seconds.

// FuzzParseToken: ParseToken never panics, refuses with ErrMalformedToken,
// and accepts only the one spelling NewToken writes: the session id is the
// token's, the hash is SHA-256 of its secret, and the secret re-encodes to
// the same characters. The input doubles as randomness for NewToken, whose
// token must parse back to its own id and hash.
func FuzzParseToken(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw string) {
		sid, hash, err := domain.ParseToken(raw)
		if err != nil {
			if !errors.Is(err, domain.ErrMalformedToken) {
				t.Fatalf("ParseToken(%q): error %v is not ErrMalformedToken", raw, err)
			}
		} else {
			if len(raw) != domain.TokenLen || !strings.HasPrefix(raw, "slt_") || raw[4:36] != sid || !domain.IsSessionID(sid) {
				t.Fatalf("ParseToken(%q) accepted session id %q", raw, sid)
			}
			secret, err := base64.RawURLEncoding.DecodeString(raw[36:])
			if err != nil || len(secret) != 32 || base64.RawURLEncoding.EncodeToString(secret) != raw[36:] {
				t.Fatalf("ParseToken(%q) accepted a secret that is not one canonical 32-byte base64url (%v)", raw, err)
			}
			if !hash.Equal(sha256.Sum256(secret)) {
				t.Fatalf("ParseToken(%q): hash is not SHA-256 of the secret", raw)
			}
		}
		if len(raw) < 48 {
			return
		}
		tok, sid2, hash2, err := domain.NewToken(strings.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		sid3, hash3, err := domain.ParseToken(tok)
		if err != nil || sid3 != sid2 || !hash3.Equal(hash2) {
			t.Fatalf("NewToken's %q parses to %q %v, want %q", tok, sid3, err, sid2)
		}
	})
}

// FuzzParseTokenHash: never panics; what it accepts prints back as the same
// hash (hex in either case; String writes lower case) and parses again.
func FuzzParseTokenHash(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		h, err := domain.ParseTokenHash(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(h.String(), s) || !strings.HasPrefix(s, "sha256:") {
			t.Fatalf("ParseTokenHash(%q) = %s", s, h)
		}
		back, err := domain.ParseTokenHash(h.String())
		if err != nil || back != h {
			t.Fatalf("%s does not parse back: %v", h, err)
		}
	})
}

// fuzzKey signs the events FuzzDecodeEvent re-seals.
var fuzzKey = func() domain.SigningKey {
	k, err := domain.NewSigningKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		panic(err)
	}
	return k
}()

// FuzzDecodeEvent: DecodeEvent never panics, nor does Judge on what it
// decodes. A decoded event re-encodes to bytes that decode to the same
// event (same encoding, same hash), and once sealed, its encoding read back
// is judged authentic: the hash covers canonical bytes that survive the
// round trip through the log. Tampering with it or linking it elsewhere is
// judged as such.
func FuzzDecodeEvent(f *testing.F) {
	ring := domain.NewKeyring(fuzzKey)
	mac := func(e domain.Event) error { return ring.Verify(e, fuzzKey.Public()) }
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := domain.DecodeEvent(data)
		if err != nil {
			return
		}
		// Judge the event as the projection would, at the head it claims:
		// a key chain with nothing introduced accepts at most an
		// introduction.
		var chain domain.KeyChain
		reason, err := domain.Judge(e, e.PrevHash, func(e domain.Event) error { return chain.Authenticate(e, ring) })
		switch reason {
		case domain.RejectHash, domain.RejectSignature:
		case "":
			if err == nil && (e.Type != domain.EventSigningKeyIntroduced || e.CheckHash() != nil) {
				t.Fatalf("Judge accepted a %s event out of fuzz input", e.Type)
			}
		default:
			t.Fatalf("Judge at the event's own head: reason %q (%v)", reason, err)
		}

		b1, err := e.Encode()
		if err != nil {
			t.Fatalf("a decoded event does not encode: %v", err)
		}
		e2, err := domain.DecodeEvent(b1)
		if err != nil {
			t.Fatalf("an encoded event does not decode: %v\n%s", err, b1)
		}
		b2, err := e2.Encode()
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("encode(decode(encode(e))) differs (%v):\n%s\n%s", err, b1, b2)
		}
		h1, err1 := e.ComputeHash()
		h2, err2 := e2.ComputeHash()
		if err1 != nil || err2 != nil || h1 != h2 {
			t.Fatalf("hash changed in a round trip: %s %s (%v %v)", h1, h2, err1, err2)
		}

		const head = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
		if err := e.Seal(head, fuzzKey); err != nil {
			t.Fatalf("seal: %v", err)
		}
		stored, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		read, err := domain.DecodeEvent(stored)
		if err != nil {
			t.Fatalf("a sealed event does not decode: %v", err)
		}
		if reason, err := domain.Judge(read, head, mac); reason != "" || err != nil {
			t.Fatalf("a sealed event read back is judged %q: %v\n%s", reason, err, stored)
		}
		if reason, _ := domain.Judge(read, "", mac); reason != domain.RejectChain {
			t.Fatalf("linked to another head: judged %q, want %q", reason, domain.RejectChain)
		}
		tampered := read
		tampered.UserID += "x"
		if reason, _ := domain.Judge(tampered, head, mac); reason != domain.RejectHash {
			t.Fatalf("tampered: judged %q, want %q", reason, domain.RejectHash)
		}
		forged := read
		forged.MAC = strings.Repeat("A", len(read.MAC))
		if reason, _ := domain.Judge(forged, head, mac); reason != domain.RejectSignature {
			t.Fatalf("forged MAC: judged %q, want %q", reason, domain.RejectSignature)
		}
	})
}
