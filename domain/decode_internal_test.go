package domain

import (
	"crypto/sha256"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeAsEncoded: whatever decodeAsEncoded accepts, json.Unmarshal
// decodes to the same Event, so DecodeEvent's verdicts do not depend on
// which of the two read the bytes. Seeded with what Encode writes and
// near misses of it.
func FuzzDecodeAsEncoded(f *testing.F) {
	addEncodedSeeds(f)
	f.Add([]byte(`{"type":"session_used","event_id":"x","time":"2026-01-02T03:04:05Z","schema_version":02,"payload":{},"prev_hash":""}`))
	f.Add([]byte(`{"type":"session_used","event_id":"x","time":"2026-01-02T03:04:05Z","schema_version":2,"payload":{"a":"}\"]"},"prev_hash":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeAsEncoded(data)
		if !ok {
			return
		}
		var slow Event
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("decodeAsEncoded accepted what json.Unmarshal refuses (%v):\n%s", err, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("decodeAsEncoded %+v, json.Unmarshal %+v:\n%s", fast, slow, data)
		}
	})
}

// TestDecodeAsEncodedReadsWhatEncodeWrites: the fast path is taken for the
// log's own events, not just allowed.
func TestDecodeAsEncodedReadsWhatEncodeWrites(t *testing.T) {
	k, _ := NewSigningKey(make([]byte, 32))
	e := SessionUse("u1", "s1", time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC))
	e.ID = "id"
	if err := e.Seal("", k); err != nil {
		t.Fatal(err)
	}
	b, _ := e.Encode()
	got, ok := decodeAsEncoded(b)
	if !ok || !reflect.DeepEqual(got, e) {
		t.Fatalf("decodeAsEncoded(%s) = %+v %v, want %+v", b, got, ok, e)
	}
}

// FuzzSessionStartedAsEncoded: whatever sessionStartedAsEncoded accepts,
// json.Unmarshal decodes to the same payload, so SessionFromEvent's answers
// do not depend on which of the two read it.
func FuzzSessionStartedAsEncoded(f *testing.F) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	u := NewUser("u1", "a@example.com", "h", nil)
	for _, e := range []Event{
		u.StartSession("s1", TokenHash{1}, "password", true, false, at, DefaultPolicy()),
		u.StartSession("s2", TokenHash{2}, "api_key", false, true, at, DefaultPolicy()),
	} {
		f.Add([]byte(e.Payload))
	}
	f.Add([]byte(`{"method":"api_key","keep_logged_in":false,"mfa":false,"max_expires_at":"2026-01-02T03:04:05Z","idle_window_seconds":60,"token_hash":"x","api_key_id":"k1"}`))
	f.Add([]byte(`{"method":"password","keep_logged_in":true,"mfa":false,"max_expires_at":"2026-01-02T03:04:05+02:00","idle_window_seconds":0600,"token_hash":"x"}`))
	f.Add([]byte(`{"method":"password","keep_logged_in":true,"mfa":false,"max_expires_at":"2026-01-02T03:04:05Z","idle_window_seconds":12345678901,"token_hash":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := sessionStartedAsEncoded(data)
		if !ok {
			return
		}
		var slow SessionStarted
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("sessionStartedAsEncoded accepted what json.Unmarshal refuses (%v):\n%s", err, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("sessionStartedAsEncoded %+v, json.Unmarshal %+v:\n%s", fast, slow, data)
		}
	})
}

// TestSessionStartedAsEncodedReadsWhatStartSessionWrites: the fast path is
// taken for the log's own sessions, not just allowed.
func TestSessionStartedAsEncodedReadsWhatStartSessionWrites(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, keep := range []bool{false, true} {
		e := NewUser("u1", "a@example.com", "h", nil).StartSession("s1", TokenHash{7}, "password", keep, !keep, at, DefaultPolicy())
		want, err := DecodePayload[SessionStarted](e)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := sessionStartedAsEncoded(e.Payload)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Fatalf("sessionStartedAsEncoded(%s) = %+v %v, want %+v", e.Payload, got, ok, want)
		}
	}
}

// FuzzDecodeVouched: what DecodeVouched accepts, DecodeEvent either
// decodes to the same envelope (the payload aside, which DecodeVouched
// leaves out) or refuses only because the payload is not valid JSON, the
// one check DecodeVouched leaves to the signature that vouches for the
// bytes; and StoredHasher.Sum is StoredHashMatches and SHA-256 of the bytes.
func FuzzDecodeVouched(f *testing.F) {
	addEncodedSeeds(f)
	f.Add([]byte(`{"type":"session_used","event_id":"x","time":"2026-01-02T03:04:05Z","schema_version":2,"payload":{"a":},"prev_hash":""}`))
	f.Add([]byte(`{"type":"session_used","event_id":"x","time":"0001-01-01T00:00:00Z","schema_version":2,"payload":{},"prev_hash":""}`))
	f.Add([]byte(`{"type":"nope","event_id":"x","time":"2026-01-02T03:04:05Z","schema_version":2,"payload":{},"prev_hash":""}`))
	var hasher StoredHasher // reused, as Verify's workers do
	f.Fuzz(func(t *testing.T, data []byte) {
		vouched, ok := DecodeVouched(data, string(data))
		if ok {
			if vouched.Payload != nil {
				t.Fatalf("DecodeVouched kept a payload:\n%s", data)
			}
			exact, err := DecodeEvent(data)
			if err == nil {
				exact.Payload = nil
				if !reflect.DeepEqual(vouched, exact) {
					t.Fatalf("DecodeVouched %+v, DecodeEvent %+v:\n%s", vouched, exact, data)
				}
			} else if json.Valid(data) { // then only the payload can be wrong
				t.Fatalf("DecodeVouched accepted what DecodeEvent refuses (%v), valid JSON:\n%s", err, data)
			}
		}
		e := vouched
		if !ok {
			e, _ = DecodeEvent(data)
		}
		matches, sum := hasher.Sum(e, data)
		if matches != e.StoredHashMatches(data) || sum != sha256.Sum256(data) {
			t.Fatalf("StoredHasher.Sum %v %x, StoredHashMatches %v, SHA-256 %x", matches, sum, e.StoredHashMatches(data), sha256.Sum256(data))
		}
	})
}

// addEncodedSeeds seeds a decoder's fuzz target with what Encode writes for
// a few kinds of sealed event, and their canonical bytes (the same without
// the authenticators).
func addEncodedSeeds(f *testing.F) {
	f.Helper()
	k, err := NewSigningKey(make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	start := NewUser("u1", "a@example.com", "h", nil).StartSession("s1", TokenHash{}, "password", true, false, at, DefaultPolicy())
	for _, e := range []Event{start, SessionUse("u1", "s1", at), IntroduceKey(k, at), ClaimEmail("u1", "a@example.com", at)} {
		e.ID = "id"
		if err := e.Seal("sha256:00", k); err != nil {
			f.Fatal(err)
		}
		b, err := e.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		canonical, _ := e.CanonicalBytes()
		f.Add(canonical)
	}
}
