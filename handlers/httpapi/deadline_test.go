package httpapi

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestDeadlineCtxBoundsWaiters: a request's context reports its deadline,
// and whatever waits on it (directly, or through a context derived from
// it) is released at the deadline with DeadlineExceeded, as with
// context.WithDeadline.
func TestDeadlineCtxBoundsWaiters(t *testing.T) {
	d := time.Now().Add(50 * time.Millisecond)
	var c deadlineCtx
	c.init(context.Background(), d)
	defer c.cancel()
	if got, ok := c.Deadline(); !ok || !got.Equal(d) {
		t.Fatalf("Deadline = %v, %v; want %v", got, ok, d)
	}
	if c.Err() != nil {
		t.Fatalf("Err before the deadline = %v", c.Err())
	}
	derived, cancel := context.WithCancel(&c)
	defer cancel()
	select {
	case <-derived.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a context derived from the request's was not cancelled at its deadline")
	}
	if !errors.Is(derived.Err(), context.DeadlineExceeded) || !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, %v; want DeadlineExceeded", derived.Err(), c.Err())
	}
	if !errors.Is(context.Cause(&c), context.DeadlineExceeded) {
		t.Fatalf("Cause = %v", context.Cause(&c))
	}
}

// TestDeadlineCtxPastDeadline: past its deadline, a context nothing waited
// on says so (Err, Done, Cause) like context.WithDeadline.
func TestDeadlineCtxPastDeadline(t *testing.T) {
	var c deadlineCtx
	c.init(context.Background(), time.Now().Add(-time.Millisecond))
	defer c.cancel()
	if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(&c), context.DeadlineExceeded) {
		t.Fatalf("Err, Cause = %v, %v; want DeadlineExceeded", c.Err(), context.Cause(&c))
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done is open past the deadline")
	}
}

// TestDeadlineCtxFollowsParent: the parent's values, its cancellation and
// its earlier deadline reach the request.
func TestDeadlineCtxFollowsParent(t *testing.T) {
	type key struct{}
	parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	var c deadlineCtx
	c.init(parent, time.Now().Add(time.Hour))
	defer c.cancel()
	if c.Value(key{}) != "v" {
		t.Fatalf("Value = %v", c.Value(key{}))
	}
	cancelParent()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("Err after the parent's cancel = %v", c.Err())
	}
	<-c.Done()

	early := time.Now().Add(time.Minute)
	p2, cancel2 := context.WithDeadline(context.Background(), early)
	defer cancel2()
	var c2 deadlineCtx
	c2.init(p2, time.Now().Add(time.Hour))
	if got, _ := c2.Deadline(); !got.Equal(early) {
		t.Fatalf("Deadline = %v, want the parent's %v", got, early)
	}
}

// TestRequestsAreBounded: every request but the feed's reaches its handler
// with a deadline RequestTimeout away.
func TestRequestsAreBounded(t *testing.T) {
	var got time.Time
	var ok bool
	a := New(Config{})
	h := a.instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok = r.Context().Deadline()
	}), nil)
	before := time.Now()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/validate", nil))
	if !ok || got.Before(before.Add(RequestTimeout)) || got.After(time.Now().Add(RequestTimeout)) {
		t.Fatalf("deadline %v, %v; want %v from the request's start", got, ok, RequestTimeout)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", FeedPath, nil))
	if ok {
		t.Fatalf("the feed has a deadline (%v)", got)
	}
}

// TestHTTPMetricsByRoute: each request counts once under its route
// pattern and status code ("unmatched" when no route took it), and its
// latency once under its route.
func TestHTTPMetricsByRoute(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := New(Config{Registerer: reg})
	h := a.Handler()
	for _, c := range []struct {
		method, target string
		n              int
	}{{"GET", "/healthz", 3}, {"POST", "/healthz", 2}, {"GET", "//v1/validate", 1}, {"GET", "/nowhere", 1}} {
		for range c.n {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(c.method, c.target, nil))
		}
	}
	want := map[string]float64{
		"GET /healthz 200": 3, "/healthz 405": 2, "unmatched 400": 1, "/ 404": 1,
	}
	got := map[string]float64{}
	latency := map[string]uint64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetName() {
			case "ledger_http_requests_total":
				got[labels["route"]+" "+labels["code"]] = m.GetCounter().GetValue()
			case "ledger_http_request_duration_seconds":
				latency[labels["route"]] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("ledger_http_requests_total = %v, want %v", got, want)
	}
	if wantLat := map[string]uint64{"GET /healthz": 3, "/healthz": 2, "unmatched": 1, "/": 1}; !maps.Equal(latency, wantLat) {
		t.Errorf("ledger_http_request_duration_seconds counts = %v, want %v", latency, wantLat)
	}
}
