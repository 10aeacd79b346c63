package httpapi

import (
	"net/http"
	"time"
)

// A refusal for load or guessing (429 RATE_LIMITED or TOO_MANY_ATTEMPTS,
// 503 BUSY) is held for up to Config.TarpitMax (default 1 s) before it is
// sent. A refusal is
// cheap, so a client that retries at once can make thousands a second
// from a handful of connections and take most of the server's request
// throughput (validate included) for nothing; held, each connection makes
// about one attempt a second, and a client that honours Retry-After loses
// nothing. Holding costs a timer: the connection and its goroutine exist
// either way. At most TarpitSlots refusals are held at once; beyond, they
// are answered at once.
const (
	DefaultTarpitMax = time.Second
	TarpitSlots      = 4096
)

// tarpit holds a refusal for min(wait, Config.TarpitMax), or until the
// client goes away.
func (a *API) tarpit(r *http.Request, wait time.Duration) {
	d := min(wait, a.cfg.TarpitMax)
	if d <= 0 {
		return
	}
	select {
	case a.tarpitSlots <- struct{}{}:
		defer func() { <-a.tarpitSlots }()
	default:
		return
	}
	a.held.Inc()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// isRefusal reports whether e refuses for load or guessing: the answers
// worth holding.
func isRefusal(e *apiError) bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusServiceUnavailable && e.Reason == "BUSY"
}
