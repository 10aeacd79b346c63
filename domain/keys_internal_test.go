package domain

import (
	"crypto/ed25519"
	"math/rand/v2"
	"testing"
	"time"
)

// TestSignaturesAreCryptoEd25519s: events are signed with curve25519-voi,
// which must give the very bytes crypto/ed25519 gives (Ed25519 signatures
// are deterministic), so that any Ed25519 implementation checks them and
// the stored form of an event does not depend on the library.
func TestSignaturesAreCryptoEd25519s(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		seed := make([]byte, ed25519.SeedSize)
		for j := range seed {
			seed[j] = byte(r.Uint32())
		}
		k, err := NewSigningKey(seed)
		if err != nil {
			t.Fatal(err)
		}
		e := SessionUse("u"+string(rune('a'+i%26)), "s", time.Unix(int64(r.Uint32()), int64(r.Uint32()%1e9)).UTC())
		e.ID = "id-" + time.Duration(r.Int64()).String()
		if err := e.Seal("", k); err != nil {
			t.Fatal(err)
		}
		want := encodeAuth(ed25519.Sign(ed25519.NewKeyFromSeed(seed), eventMessage(e.Hash)))
		if e.Sig != want {
			t.Fatalf("event %d: signature %s, crypto/ed25519 gives %s", i, e.Sig, want)
		}
	}
}

// TestSealEncodedIsSealThenEncode: SealEncoded writes the bytes Seal then
// Encode write, for events of every shape (ids and subjects present or
// not, payloads with and without spaces, escapes and nesting, any time).
func TestSealEncodedIsSealThenEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	payloads := []string{`{}`, `{"a":1}`, `{ "kept_session_id" : "x" }`, `{"s":"<&>\u2028\"q\"","n":[1,2,{"b":null}]}`, `{"e":"é","t":true}`}
	types := []EventType{EventSessionUsed, EventSessionStarted, EventSessionLoggedOut, EventLoginFailed, EventUserRegistered}
	for i := range 2000 {
		k, err := NewSigningKey([]byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, byte(i >> 8)})
		if err != nil {
			t.Fatal(err)
		}
		e := Event{Type: types[r.IntN(len(types))], ID: "01" + time.Duration(r.Int64()).String(), SchemaVersion: SchemaVersion,
			Time: time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).UTC(), Payload: []byte(payloads[r.IntN(len(payloads))])}
		if r.IntN(3) > 0 {
			e.UserID = "u-" + time.Duration(r.Int64()).String()
		}
		if r.IntN(3) > 0 {
			e.SessionID = "s<" + time.Duration(r.Int64()).String() + ">"
		}
		prev := ""
		if r.IntN(2) == 0 {
			prev = "sha256:" + time.Duration(r.Int64()).String()
		}
		a, b := e, e
		got, err := a.SealEncoded(prev, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Seal(prev, k); err != nil {
			t.Fatal(err)
		}
		want, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) || a.Hash != b.Hash || a.MAC != b.MAC || a.Sig != b.Sig {
			t.Fatalf("event %d:\nSealEncoded %s\nSeal+Encode %s", i, got, want)
		}
		if d, err := DecodeEvent(got); err != nil || d.CheckHash() != nil {
			t.Fatalf("event %d: %v / %v", i, err, d.CheckHash())
		}
	}
	if _, err := (&Event{Type: EventSessionUsed}).SealEncoded("", SigningKey{}); err == nil {
		t.Fatal("sealed without a key")
	}
}
