package httpapi

import (
	"errors"
	"math"
	"net/http"
	"net/netip"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Limits are the per-client-address limits. The client address is
// ClientAddress with TrustedProxies; IPv6 addresses count by /64.
type Limits struct {
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Credentials is the bucket of every request to a credential route
	// (credentialRoutes); a zero Rate turns it off.
	Credentials AddressLimit
	// AdminFailures is the bucket of wrong admin keys: each takes a token,
	// and an address without one gets 429 on the audit endpoints whatever
	// key it sends. A zero Rate turns it off.
	AdminFailures AddressLimit
	// TrackedAddresses bounds the addresses each limit remembers; beyond,
	// the least recently seen are forgotten (their buckets start full
	// again). Memory stays bounded however many addresses send requests.
	TrackedAddresses int
}

// AddressLimit is a token bucket per client address.
type AddressLimit struct {
	Rate  float64 // tokens per second
	Burst int
}

// credentialRoutes exchange credentials (a password, a personal API key)
// for a token; a password costs an argon2id hash. A route that does so opts
// into the per-address limit Limits.Credentials by being listed here.
var credentialRoutes = []string{
	"POST /v1/auth/signup",
	"POST /v1/auth/login",
	"POST /api/1.1/wf/generate-api-token",
	"POST /v1/auth/api-key",
	// The account lifecycle (lifecycle.go): a password check, or a code
	// or link, or a request that sends one by email.
	"POST /v1/auth/password",
	"POST /v1/auth/password/reset-request",
	"POST /v1/auth/password/reset",
	"POST /v1/auth/code/request",
	"POST /v1/auth/code/verify",
	"POST /v1/auth/magic",
	"POST /v1/auth/login/mfa",
}

// errRateLimited is the per-address limits' refusal; its row in the error
// table gives the answer, the limiter the Retry-After.
var errRateLimited = errors.New("rate limited")

// addressLimiter keeps a token bucket per address key in a bounded LRU
// cache.
type addressLimiter struct {
	limit   rate.Limit
	burst   int
	buckets *lru.Cache[netip.Prefix, *rate.Limiter]
}

// newAddressLimiter is nil (no limit) for a zero rate.
func newAddressLimiter(l AddressLimit, tracked int) *addressLimiter {
	if l.Rate <= 0 {
		return nil
	}
	c, err := lru.New[netip.Prefix, *rate.Limiter](max(tracked, 1))
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &addressLimiter{limit: rate.Limit(l.Rate), burst: max(l.Burst, 1), buckets: c}
}

func (l *addressLimiter) bucket(key netip.Prefix) *rate.Limiter {
	if b, ok := l.buckets.Get(key); ok {
		return b
	}
	b := rate.NewLimiter(l.limit, l.burst)
	if prev, found, _ := l.buckets.PeekOrAdd(key, b); found {
		return prev
	}
	return b
}

// take takes a token from key's bucket. Without one it takes nothing and
// says how long until there is one. (Reserve-then-Cancel would not do: a
// cancelled reservation gives its token back only if no later one was made
// meanwhile, so under a flood every refusal would push the bucket further
// into debt and lock the address out for days.)
func (l *addressLimiter) take(key netip.Prefix) (wait time.Duration, ok bool) {
	b := l.bucket(key)
	if b.Allow() {
		return 0, true
	}
	return l.untilToken(b), false
}

// untilToken is how long until b holds a whole token.
func (l *addressLimiter) untilToken(b *rate.Limiter) time.Duration {
	t := b.Tokens()
	if t >= 1 {
		return 0
	}
	return time.Duration((1 - t) / float64(l.limit) * float64(time.Second))
}

// blocked says whether key's bucket is empty, and for how long, without
// taking a token or starting to track key.
func (l *addressLimiter) blocked(key netip.Prefix) (wait time.Duration, ok bool) {
	b, found := l.buckets.Get(key)
	if !found {
		return 0, false
	}
	if wait := l.untilToken(b); wait > 0 {
		return wait, true
	}
	return 0, false
}

// charge takes a token from key's bucket, going into debt if it has none:
// concurrent failures that all passed blocked each cost one, and the
// address waits for all of them.
func (l *addressLimiter) charge(key netip.Prefix) {
	l.bucket(key).Reserve()
}

// limitCredentials applies Limits.Credentials before the handler reads
// anything.
func (a *API) limitCredentials(next http.HandlerFunc) http.HandlerFunc {
	if a.credentials == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if wait, ok := a.credentials.take(addressKey(a.clientAddress(r))); !ok {
			a.rateLimited(w, r, wait)
			return
		}
		next(w, r)
	}
}

// rateLimited answers 429 RATE_LIMITED with the wait as Retry-After
// (whole seconds, at least 1) and counts it.
func (a *API) rateLimited(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	a.limited.WithLabelValues(r.Pattern).Inc()
	a.tarpit(r, wait)
	e := errorFor(errRateLimited)
	e.retryAfter = max(1, int(math.Ceil(wait.Seconds())))
	writeError(w, e)
}
