package main

import (
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
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
