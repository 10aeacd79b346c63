package main

import (
	"context"
	"encoding/json"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReasonOfAndAnswerKey(t *testing.T) {
	body := []byte(`{"statusCode":503,"reason":"BUSY","message":"too many password checks at once; retry shortly"}`)
	if got := reasonOf(body); got != "BUSY" {
		t.Fatalf("reasonOf = %q", got)
	}
	if got := answerKey(503, body); got != "503 BUSY" {
		t.Fatalf("answerKey = %q", got)
	}
	if got := answerKey(200, []byte(`{"response":{"token":"x"},"status":"success"}`)); got != "200" {
		t.Fatalf("answerKey of a success = %q", got)
	}
}

func TestTallyUnexpected5xx(t *testing.T) {
	tl := newAttackTally()
	tl.Answers["503 BUSY"] = 10
	tl.Answers["503 UNAVAILABLE"] = 2
	tl.Answers["500 INTERNAL_ERROR"] = 1
	tl.Answers["429 TOO_MANY_ATTEMPTS"] = 7
	tl.Transport["eof"] = 3
	if n := tl.unexpected5xx(); n != 3 {
		t.Fatalf("unexpected5xx = %d, want 3", n)
	}
	if n := tl.count(503, "BUSY"); n != 10 {
		t.Fatalf("count(503 BUSY) = %d", n)
	}
	if n := tl.count(503, ""); n != 12 {
		t.Fatalf("count(503) = %d", n)
	}
	if a, tr := tl.total(); a != 20 || tr != 3 {
		t.Fatalf("total = %d, %d", a, tr)
	}
}

func TestRandomIPv4(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	legit := netip.MustParseAddr(attackLegitAddr)
	for range 100_000 {
		a, err := netip.ParseAddr(randomIPv4(rng))
		if err != nil {
			t.Fatal(err)
		}
		if !a.Is4() || a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.As4()[0] == 0 || a.As4()[0] > 223 {
			t.Fatalf("drew %s", a)
		}
		if netip.PrefixFrom(legit, 24).Masked().Contains(a) {
			t.Fatalf("drew the legitimate client's /24: %s", a)
		}
	}
}

func TestCostFigure(t *testing.T) {
	f := costFigure("x", "x", "ms", 3, 2, "base", 2)
	if f.Ratio != 1.5 || f.Met == nil || !*f.Met {
		t.Fatalf("%+v", f)
	}
	f = costFigure("x", "x", "ms", 5, 2, "base", 2)
	if f.Met == nil || *f.Met {
		t.Fatalf("%+v", f)
	}
}

// The raw connection reads bodies (plain and chunked), Retry-After, and
// marks itself broken when the server says it will close.
func TestHTTPConnExchange(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/busy":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(503)
			w.Write([]byte(`{"reason":"BUSY"}`))
		case "/chunked":
			w.Write([]byte(`{"reason":`))
			w.(http.Flusher).Flush()
			w.Write([]byte(`"CHUNKED"}`))
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte(`{}`))
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c, err := dialHTTP(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.Close()
	get := func(path string) (response, string) {
		var body []byte
		resp, err := c.exchange([]byte("GET "+path+" HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n"), &body)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp, string(body)
	}
	if resp, body := get("/busy"); resp.code != 503 || resp.retryAfter != 3 || body != `{"reason":"BUSY"}` || c.broken {
		t.Fatalf("/busy: %+v %q broken=%v", resp, body, c.broken)
	}
	if resp, body := get("/chunked"); resp.code != 200 || !strings.Contains(body, "CHUNKED") || reasonOf([]byte(body)) != "CHUNKED" {
		t.Fatalf("/chunked: %+v %q", resp, body)
	}
	if resp, _ := get("/close"); !resp.close || !c.broken {
		t.Fatalf("/close: %+v broken=%v", resp, c.broken)
	}
}

// Both scenarios' attackers: one source sends no X-Forwarded-For, the
// distributed one a different address on (almost) every request; both
// groups are counted apart. No timing is asserted.
func TestRunAttackScenarios(t *testing.T) {
	for _, distributed := range []bool{false, true} {
		var mu sync.Mutex
		xffs := map[string]int{}
		victimHits := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var body struct{ Email string }
			_ = json.NewDecoder(r.Body).Decode(&body)
			mu.Lock()
			xffs[r.Header.Get("X-Forwarded-For")]++
			if body.Email == "victim@example.com" {
				victimHits++
			}
			mu.Unlock()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			w.Write([]byte(`{"reason":"RATE_LIMITED"}`))
		}))
		u, _ := url.Parse(srv.URL)
		res := runAttack(context.Background(), u.Host, 2, time.Now().Add(200*time.Millisecond), "victim@example.com", distributed)
		srv.Close()
		accAns, _ := res.OnAccount.total()
		unkAns, _ := res.OnUnknown.total()
		if accAns == 0 || unkAns == 0 || res.OnAccount.count(429, "RATE_LIMITED") != accAns {
			t.Fatalf("distributed=%v: answers %d/%d, %+v", distributed, accAns, unkAns, res.OnAccount)
		}
		if int64(victimHits) != accAns {
			t.Fatalf("distributed=%v: victim hits %d, tallied %d", distributed, victimHits, accAns)
		}
		if distributed {
			if xffs[""] != 0 || len(xffs) < 2 {
				t.Fatalf("distributed: %d requests without X-Forwarded-For, %d addresses", xffs[""], len(xffs))
			}
		} else if len(xffs) != 1 || xffs[""] == 0 {
			t.Fatalf("one source: X-Forwarded-For seen: %v", xffs)
		}
	}
}

func TestLoginRequestForwardedFor(t *testing.T) {
	if r := string(loginRequest(nil, "h", "", "a@b.c", "pw")); strings.Contains(r, "X-Forwarded-For") || !strings.HasSuffix(r, `"password":"pw"}`) {
		t.Fatalf("without an address: %q", r)
	}
	if r := string(loginRequest(nil, "h", "203.0.113.9", "a@b.c", "pw")); !strings.Contains(r, "\r\nX-Forwarded-For: 203.0.113.9\r\n") {
		t.Fatalf("with an address: %q", r)
	}
}

// The figure ids of every scenario are distinct and all in the table order.
func TestAttackFigureOrder(t *testing.T) {
	seen := map[string]bool{}
	var fs []Figure
	for i := len(attackScenarios) - 1; i >= 0; i-- {
		for j := len(attackKinds) - 1; j >= 0; j-- {
			id := attackFigureID(attackScenarios[i].id, attackKinds[j])
			if seen[id] {
				t.Fatalf("duplicate id %s", id)
			}
			seen[id] = true
			fs = append(fs, Figure{ID: id})
		}
	}
	got := orderFigures(append(fs, Figure{ID: "memory"}))
	if got[0].ID != "memory" || got[1].ID != attackFigureID(attackScenarios[0].id, attackKinds[0]) ||
		got[len(got)-1].ID != attackFigureID(attackScenarios[len(attackScenarios)-1].id, attackKinds[len(attackKinds)-1]) {
		t.Fatalf("order: %v … %v", got[:2], got[len(got)-1])
	}
}

const sampleMetrics = `# HELP ledger_http_request_duration_seconds HTTP request latency by route.
# TYPE ledger_http_request_duration_seconds histogram
ledger_http_request_duration_seconds_bucket{route="GET /healthz",le="0.001"} 7
ledger_http_request_duration_seconds_bucket{route="GET /v1/validate",le="0.001"} 50
ledger_http_request_duration_seconds_bucket{route="GET /v1/validate",le="0.01"} 90
ledger_http_request_duration_seconds_bucket{route="GET /v1/validate",le="0.1"} 100
ledger_http_request_duration_seconds_bucket{route="GET /v1/validate",le="+Inf"} 100
ledger_http_request_duration_seconds_sum{route="GET /v1/validate"} 0.4
ledger_http_request_duration_seconds_count{route="GET /v1/validate"} 100
`

func TestPromHistogram(t *testing.T) {
	h, err := parseHistogram(strings.NewReader(sampleMetrics), "ledger_http_request_duration_seconds", validateRoute)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.le) != 4 || !math.IsInf(h.le[3], 1) || h.count() != 100 {
		t.Fatalf("%+v", h)
	}
	// Rank 50 is the top of the first bucket; rank 95 halfway into the third.
	if v, over := h.quantile(0.5); over || math.Abs(v-0.001) > 1e-12 {
		t.Fatalf("p50 = %v %v", v, over)
	}
	if v, over := h.quantile(0.95); over || math.Abs(v-0.055) > 1e-12 {
		t.Fatalf("p95 = %v %v", v, over)
	}
	if b := h.bucketOf(0.95); b != "(10, 100] ms" {
		t.Fatalf("bucketOf(0.95) = %q", b)
	}
	// A later scrape with 10 more, all beyond 0.1 s.
	later, _ := parseHistogram(strings.NewReader(strings.ReplaceAll(sampleMetrics, `le="+Inf"} 100`, `le="+Inf"} 110`)),
		"ledger_http_request_duration_seconds", validateRoute)
	d := later.sub(h)
	if d.count() != 10 {
		t.Fatalf("delta count %v", d.count())
	}
	if v, over := d.quantile(0.99); !over || v != 0.1 {
		t.Fatalf("delta p99 = %v %v", v, over)
	}
	if b := d.bucketOf(0.99); b != "> 100 ms" {
		t.Fatalf("delta bucketOf(0.99) = %q", b)
	}
	if v, _ := (promHistogram{}).quantile(0.99); !math.IsNaN(v) {
		t.Fatalf("empty: %v", v)
	}
	if _, err := parseHistogram(strings.NewReader(sampleMetrics), "ledger_http_request_duration_seconds", `route="GET /nowhere"`); err == nil {
		t.Fatal("no error for a missing series")
	}
}
