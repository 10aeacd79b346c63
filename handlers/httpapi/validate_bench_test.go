package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/ledger/handlers/ports"
	"github.com/sessionledger/ledger/handlers/query"
)

// BenchmarkValidateVsHealthz serves GET /v1/validate?touch=false and GET
// /healthz alternately through the whole handler (access table, limits,
// instrumentation), in process and over the in-memory ledger, and reports
// validate's throughput as a ratio of /healthz's in the same run
// ("validate/healthz"). It isolates what the API layer adds per validate
// from the network and from the projection; scripts/bench measures the
// whole server.
func BenchmarkValidateVsHealthz(b *testing.B) {
	now := func() time.Time { return time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC) }
	a, err := fakeAPI(now)
	if err != nil {
		b.Fatal(err)
	}
	h := a.Handler()
	signup := httptest.NewRequest("POST", "/v1/auth/signup", strings.NewReader(`{"email":"ann@example.com","password":"correct horse"}`))
	signup.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, signup)
	var issued struct{ Response issuedResponse }
	if err := json.Unmarshal(w.Body.Bytes(), &issued); err != nil || w.Code != 201 {
		b.Fatalf("signup: %d %s", w.Code, w.Body)
	}
	validate := httptest.NewRequest("GET", "/v1/validate?touch=false", nil)
	validate.Header.Set("Authorization", "Bearer "+issued.Response.Token)
	healthz := httptest.NewRequest("GET", "/healthz", nil)
	for name, req := range map[string]*http.Request{"validate": validate, "healthz": healthz} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", name, w.Code, w.Body)
		}
	}

	var inValidate, inHealthz time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		h.ServeHTTP(httptest.NewRecorder(), healthz)
		mid := time.Now()
		h.ServeHTTP(httptest.NewRecorder(), validate)
		inValidate += time.Since(mid)
		inHealthz += mid.Sub(start)
	}
	n := float64(b.N)
	b.ReportMetric(float64(inValidate.Nanoseconds())/n, "validate-ns/op")
	b.ReportMetric(float64(inHealthz.Nanoseconds())/n, "healthz-ns/op")
	b.ReportMetric(float64(inHealthz)/float64(inValidate), "validate/healthz")
}

// discardWriter is the cheapest http.ResponseWriter: its header map is
// cleared between requests, so what a benchmark counts is the handler
// chain's own work, not a recorder's buffers.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

func (d *discardWriter) reset() {
	clear(d.h)
	d.status, d.n = 0, 0
}

// BenchmarkHandlerChain serves one request at a time through the whole
// handler (instrumentation, path check, read-your-writes, the access
// table) into a writer that keeps nothing, over the in-memory ledger:
// ns/op and allocs/op of /healthz, of validate (touch=false), and of a
// touched validate of a session due a use whose use is already queued (the
// state every validate of that session is in until the use is applied).
func BenchmarkHandlerChain(b *testing.B) {
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	a, err := fakeAPI(now)
	if err != nil {
		b.Fatal(err)
	}
	uses, err := query.NewUseRecorder(query.UseRecorderConfig{Granularity: time.Hour, Log: nopUseLog{}})
	if err != nil {
		b.Fatal(err)
	}
	a.cfg.Queries.Validate.Uses = uses // never run: a queued use stays queued
	h := a.Handler()
	signup := httptest.NewRequest("POST", "/v1/auth/signup", strings.NewReader(`{"email":"ann@example.com","password":"correct horse"}`))
	signup.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, signup)
	var issued struct{ Response issuedResponse }
	if err := json.Unmarshal(w.Body.Bytes(), &issued); err != nil || w.Code != 201 {
		b.Fatalf("signup: %d %s", w.Code, w.Body)
	}
	clock.Store(t0.Add(2 * time.Hour).UnixNano()) // the session is due a use
	request := func(target string) *http.Request {
		r := httptest.NewRequest("GET", target, nil)
		r.Header.Set("Authorization", "Bearer "+issued.Response.Token)
		return r
	}
	for _, c := range []struct {
		name string
		req  *http.Request
	}{
		{"healthz", httptest.NewRequest("GET", "/healthz", nil)},
		{"validate", request("/v1/validate?touch=false")},
		{"validate-touched", request("/v1/validate")},
	} {
		b.Run(c.name, func(b *testing.B) {
			d := &discardWriter{h: http.Header{}}
			h.ServeHTTP(d, c.req)
			if d.status != http.StatusOK {
				b.Fatalf("%s: %d", c.name, d.status)
			}
			b.ReportAllocs()
			for b.Loop() {
				d.reset()
				h.ServeHTTP(d, c.req)
			}
		})
	}
}

type nopUseLog struct{}

func (nopUseLog) RecordUses(_ context.Context, facts []ports.Fact) (int, error) {
	return len(facts), nil
}
