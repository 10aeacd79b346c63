package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
