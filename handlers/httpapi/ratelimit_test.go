package httpapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEveryCredentialRouteIsLimited: each listed route is registered and
// refuses an address whose bucket is empty, before reading the body, while
// other addresses and other routes go on.
func TestEveryCredentialRouteIsLimited(t *testing.T) {
	// Refusals are held only briefly here: the tarpit is not what this tests.
	a := New(Config{TarpitMax: time.Millisecond, Limits: Limits{Credentials: AddressLimit{Rate: 0.001, Burst: 1}, TrackedAddresses: 64}})
	h := a.Handler()
	send := func(route, remote string) *httptest.ResponseRecorder {
		method, path, _ := strings.Cut(route, " ")
		r := httptest.NewRequest(method, path, nil) // no Content-Type: 415 when let through
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	// Let through, a route answers 415 for the missing Content-Type, or,
	// for a Users route (a password change), 401 for the missing token.
	through := func(route string) int {
		for _, rt := range a.Routes() {
			if rt.Pattern() == route && rt.Access == Users {
				return http.StatusUnauthorized
			}
		}
		return http.StatusUnsupportedMediaType
	}
	for i, route := range credentialRoutes {
		remote := fmt.Sprintf("198.51.100.%d:1234", i+1)
		if w := send(route, remote); w.Code != through(route) {
			t.Fatalf("%s, first request: %d %s (is the route registered?)", route, w.Code, w.Body)
		}
		w := send(route, remote)
		if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), `"reason":"RATE_LIMITED"`) || w.Header().Get("Retry-After") == "" {
			t.Fatalf("%s, second request: %d %s, Retry-After %q", route, w.Code, w.Body, w.Header().Get("Retry-After"))
		}
		if w := send(route, fmt.Sprintf("203.0.113.%d:1234", i+1)); w.Code != through(route) {
			t.Fatalf("%s, another address: %d", route, w.Code)
		}
	}
	// One bucket per address across the credential routes.
	if w := send(credentialRoutes[1], "198.51.100.1:1"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("an address limited on signup may log in: %d", w.Code)
	}
	if w := send("GET /healthz", "198.51.100.1:1"); w.Code != http.StatusOK {
		t.Fatalf("healthz from a limited address: %d", w.Code)
	}
}

// TestTrackedAddressesAreBounded: a flood from many addresses keeps at
// most TrackedAddresses buckets.
func TestTrackedAddressesAreBounded(t *testing.T) {
	l := newAddressLimiter(AddressLimit{Rate: 1, Burst: 2}, 100)
	for i := range 10000 {
		l.take(addressKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})))
	}
	if n := l.buckets.Len(); n != 100 {
		t.Fatalf("%d buckets, want 100", n)
	}
	// The admin check never starts tracking an address by itself.
	before := l.buckets.Len()
	l.buckets.Purge()
	if _, blocked := l.blocked(addressKey(netip.MustParseAddr("192.0.2.1"))); blocked || l.buckets.Len() != 0 {
		t.Fatalf("blocked on an unknown address, or tracked it (%d buckets, %d before)", l.buckets.Len(), before)
	}
}

// TestAFloodDoesNotPushTheBucketIntoDebt: 400 concurrent requests from one
// address against "20 at once, then one a second" get exactly 20 through,
// and the refusals cost nothing: the address may go on at the bucket's
// rate, not after a debt of every refusal (which Reserve-then-Cancel
// builds under concurrency).
func TestAFloodDoesNotPushTheBucketIntoDebt(t *testing.T) {
	l := newAddressLimiter(AddressLimit{Rate: 1, Burst: 20}, 10)
	key := addressKey(netip.MustParseAddr("203.0.113.9"))
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok := l.take(key); ok {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n < 20 || n > 21 { // a token may refill during the run
		t.Fatalf("%d of 400 allowed, want the burst of 20", n)
	}
	if wait, ok := l.take(key); ok || wait > 2*time.Second {
		t.Fatalf("after the flood: allowed %v, wait %s; want a refusal for at most about a second", ok, wait)
	}
}
