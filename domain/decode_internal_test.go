package domain

import (
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
