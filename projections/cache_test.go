package projections

import (
	"crypto/rand"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// TestSessionCacheHoldsWhatFits: session ids spread evenly over the
// shards, so a cache filled to five eighths of its size evicts nothing
// (each shard then expects 160 of its 256, and 256 is 7.7 standard
// deviations away; the former hash gave some shards 320).
func TestSessionCacheHoldsWhatFits(t *testing.T) {
	const size = 1 << 14
	c := newSessionCache(size)
	ids := make([]string, size*5/8)
	for i := range ids {
		_, id, _, err := domain.NewToken(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
		c.put(domain.SessionSnapshot{ID: ids[i]}, c.gen.Load())
	}
	missing := 0
	for _, id := range ids {
		if _, ok := c.get(id); !ok {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d sessions evicted from a cache of %d", missing, len(ids), size)
	}
}

var cacheSeed = flag.Int64("cache-seed", 0, "replay TestSessionCacheGivesBackWhatItWasGiven with this seed (0: a new one)")

// TestSessionCacheGivesBackWhatItWasGiven: whatever a snapshot holds, the
// cache answers it exactly or not at all; snapshots of the kind Pebble
// gives (UTC, no monotonic reading, short strings) are kept.
func TestSessionCacheGivesBackWhatItWasGiven(t *testing.T) {
	seed := *cacheSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay with -cache-seed)", seed)
	rng := mrand.New(mrand.NewPCG(uint64(seed), 0))
	str := func(max int) string {
		b := make([]byte, rng.IntN(max+1))
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return string(b)
	}
	// fits says whether the snapshot being built has only what the
	// compact form holds: strings of up to 47 bytes, times zero or in UTC
	// without a monotonic reading.
	fits := true
	instant := func() time.Time {
		switch rng.IntN(5) {
		case 0:
			return time.Time{}
		case 1:
			fits = false
			return time.Now() // a monotonic reading: not what Pebble gives
		case 2:
			fits = false
			return time.Unix(rng.Int64N(1<<33), rng.Int64N(1e9)).In(time.FixedZone("X", 3600))
		default:
			return time.Unix(rng.Int64N(1<<33), rng.Int64N(1e9)).UTC()
		}
	}
	reasons := []domain.Reason{domain.ReasonNone, domain.ReasonRevokedLogout, domain.ReasonRevokedPasswordReset, domain.Reason(str(60))}
	c := newSessionCache(1 << 12)
	kept := 0
	for i := range 2000 {
		fits = true
		_, id, hash, err := domain.NewToken(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			id = str(60) // maybe too long for the compact form
		}
		s := domain.SessionSnapshot{
			ID: id, UserID: str(50), TokenHash: hash, Method: []string{domain.SessionMethodPassword, str(50)}[rng.IntN(2)],
			KeepLoggedIn: rng.IntN(2) == 0, MFA: rng.IntN(2) == 0, IdleWindow: time.Duration(rng.Int64()),
			StartedAt: instant(), MaxExpiresAt: instant(), LastUseAt: instant(), RevokedAt: instant(),
			RevokedBy: reasons[rng.IntN(len(reasons))],
		}
		for _, v := range []string{s.ID, s.UserID, s.Method, string(s.RevokedBy)} {
			fits = fits && len(v) <= 47
		}
		for _, v := range []string{s.Method, string(s.RevokedBy)} {
			fits = fits && slices.Contains(knownValues, v)
		}
		c.put(s, c.gen.Load())
		got, ok := c.get(s.ID)
		if ok && got != s {
			t.Fatalf("put %+v, got back %+v", s, got)
		}
		if ok != fits {
			t.Fatalf("cached %v, want %v: %+v", ok, fits, s)
		}
		if ok {
			kept++
		}
	}
	// A snapshot as Pebble gives it always fits.
	_, id, hash, _ := domain.NewToken(rand.Reader)
	at := time.Unix(1_790_000_000, 123456789).UTC()
	s := domain.SessionSnapshot{ID: id, UserID: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", TokenHash: hash,
		Method: domain.SessionMethodPassword, StartedAt: at, MaxExpiresAt: at.Add(24 * time.Hour),
		IdleWindow: 30 * 24 * time.Hour, LastUseAt: at, RevokedAt: at.Add(time.Hour), RevokedBy: domain.ReasonRevokedLogout}
	c.put(s, c.gen.Load())
	if got, ok := c.get(id); !ok || got != s {
		t.Fatalf("a snapshot as Pebble gives it: cached %v, %+v", ok, got)
	}
	if kept == 0 {
		t.Fatal("no random snapshot was kept: the test tests nothing")
	}
}

// TestSessionCacheHoldsNoPointers: the compact form exists so that the
// collector does not scan the cache; a pointer added to it would undo that
// silently.
func TestSessionCacheHoldsNoPointers(t *testing.T) {
	var walk func(reflect.Type) string
	walk = func(ty reflect.Type) string {
		switch ty.Kind() {
		case reflect.Pointer, reflect.String, reflect.Slice, reflect.Map, reflect.Chan, reflect.Func, reflect.Interface, reflect.UnsafePointer:
			return ty.String()
		case reflect.Array:
			return walk(ty.Elem())
		case reflect.Struct:
			for i := range ty.NumField() {
				if p := walk(ty.Field(i).Type); p != "" {
					return ty.Field(i).Name + ": " + p
				}
			}
		}
		return ""
	}
	for _, ty := range []reflect.Type{reflect.TypeFor[shortString](), reflect.TypeFor[cachedSession]()} {
		if p := walk(ty); p != "" {
			t.Errorf("%s holds a pointer (%s)", ty, p)
		}
	}
}

// BenchmarkSessionCacheGC: a full collection with a full cache, against
// the same sessions kept as snapshots by value (the former cache), in the
// same run, each built and timed while the other is unreachable. The
// figures are gc-ns/op of each and their ratio.
func BenchmarkSessionCacheGC(b *testing.B) {
	const n = SessionCacheSize
	at := time.Unix(1_790_000_000, 0).UTC()
	sessions := func(put func(domain.SessionSnapshot)) {
		for i := range n {
			var hash domain.TokenHash
			hash[0], hash[1], hash[2] = byte(i), byte(i>>8), byte(i>>16)
			put(domain.SessionSnapshot{ID: fmt.Sprintf("%032x", i), UserID: fmt.Sprintf("0193a1b2-c3d4-7e5f-8a9b-%012x", i),
				TokenHash: hash, Method: domain.SessionMethodPassword, StartedAt: at, MaxExpiresAt: at.Add(24 * time.Hour),
				IdleWindow: 30 * 24 * time.Hour, LastUseAt: at})
		}
	}
	timeGC := func(keep any) time.Duration {
		runtime.GC() // what building it left behind
		start := time.Now()
		for range b.N {
			runtime.GC()
		}
		el := time.Since(start)
		runtime.KeepAlive(keep)
		return el
	}
	b.ResetTimer()
	compactNs := func() time.Duration {
		c := newSessionCache(n * 2)
		sessions(func(s domain.SessionSnapshot) { c.put(s, c.gen.Load()) })
		if _, ok := c.get(fmt.Sprintf("%032x", n-1)); !ok {
			b.Fatal("the cache did not keep the sessions")
		}
		return timeGC(c)
	}()
	valueNs := func() time.Duration {
		m := make(map[string]domain.SessionSnapshot, n)
		sessions(func(s domain.SessionSnapshot) { m[s.ID] = s })
		return timeGC(m)
	}()
	b.ReportMetric(float64(compactNs.Nanoseconds())/float64(b.N), "compact-gc-ns/op")
	b.ReportMetric(float64(valueNs.Nanoseconds())/float64(b.N), "by-value-gc-ns/op")
	b.ReportMetric(float64(compactNs)/float64(valueNs), "compact/by-value")
}
