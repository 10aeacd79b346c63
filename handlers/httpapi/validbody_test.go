package httpapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

// encodingJSON is what writeJSON writes for v's documented shape.
func encodingJSON(t testing.TB, v validBody) []byte {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v.response()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestValidBodyAppendJSON holds validate's hand encoder to encoding/json
// over strings that need escaping and those that do not, and times of
// every kind.
func TestValidBodyAppendJSON(t *testing.T) {
	strs := []string{
		"", "password", "api_key", "aal1", "user", "admin", "019aac1f-7b4c-7f12-8e0a-5b3c9d2e1f60",
		"7c3e9a512f0d6c1e8b47019aac1f7b4d", `"`, `\`, "<script>&</script>", "a\x00b", "\x1f", "\x7f",
		"\b\f\n\r\t", "\u2028\u2029", "é", "日本", "\xff", "a\xc3", "\xed\xa0\x80", "\U0001F600", "\ufffd",
	}
	zone := time.FixedZone("x", -(3*3600 + 30*60))
	times := []time.Time{
		{}, time.Date(2026, 12, 22, 18, 7, 33, 0, time.UTC), time.Date(2026, 12, 22, 18, 7, 33, 999999999, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, zone), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Now(), time.Unix(1<<40, 0).UTC(),
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	randomString := func() string {
		if rnd.IntN(3) == 0 {
			return strs[rnd.IntN(len(strs))]
		}
		b := make([]byte, rnd.IntN(12))
		for i := range b {
			b[i] = byte(rnd.IntN(256))
			if rnd.IntN(2) == 0 {
				b[i] = byte(0x20 + rnd.IntN(0x60))
			}
		}
		return string(b)
	}
	randomTime := func() time.Time {
		if rnd.IntN(2) == 0 {
			return times[rnd.IntN(len(times))]
		}
		return time.Unix(rnd.Int64N(1<<36)-1<<35, rnd.Int64N(1e9)).In(zone)
	}
	escaped := 0
	for i := range 20000 {
		v := validBody{
			aal: randomString(), method: randomString(), role: randomString(), sessionID: randomString(), userID: randomString(),
			expiresAt: randomTime(), idleExpiresAt: randomTime(), maxExpiresAt: randomTime(),
			keepLoggedIn: rnd.IntN(2) == 0, mfa: rnd.IntN(2) == 0,
		}
		if i < len(strs) {
			v.userID = strs[i]
		}
		want := encodingJSON(t, v)
		if got := v.appendJSON([]byte("prefix")); !bytes.Equal(got[len("prefix"):], want) {
			t.Fatalf("appendJSON of %#v:\n got %q\nwant %q", v, got[len("prefix"):], want)
		}
		if !plainJSON(v.userID) {
			escaped++
		}
	}
	if escaped == 0 {
		t.Fatal("no string needed escaping: the test tests nothing")
	}
}

// FuzzValidBodyAppendJSON is TestValidBodyAppendJSON on the fuzzer's
// strings and times.
func FuzzValidBodyAppendJSON(f *testing.F) {
	f.Add("019aac1f-7b4c-7f12-8e0a-5b3c9d2e1f60", "password", int64(1798000000), int64(0), true)
	f.Add("<&>\u2028\xff", "\x00", int64(-62135596801), int64(-3600), false)
	f.Fuzz(func(t *testing.T, s, method string, sec, offset int64, b bool) {
		at := time.Unix(sec, 0).In(time.FixedZone("", int(offset%(24*3600))))
		v := validBody{aal: s, method: method, role: s, sessionID: s, userID: method,
			expiresAt: at, idleExpiresAt: at.UTC(), maxExpiresAt: at, keepLoggedIn: b, mfa: !b}
		if got, want := v.appendJSON(nil), encodingJSON(t, v); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON:\n got %q\nwant %q", got, want)
		}
	})
}

// TestGatewayHeadersAreCanonical: validate sets these keys in the header
// map directly, which finds them only in their canonical form.
func TestGatewayHeadersAreCanonical(t *testing.T) {
	for _, k := range []string{HeaderUserID, HeaderSessionID, HeaderRole, "Content-Type", "Cache-Control"} {
		if http.CanonicalHeaderKey(k) != k {
			t.Errorf("%q is not canonical (%q)", k, http.CanonicalHeaderKey(k))
		}
	}
}
