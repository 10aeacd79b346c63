package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestLuaScriptWalksThePool runs wrk with the bench's script against a
// server that records what it is sent: every request of a validate target
// carries the path and the next token of the pool, in order and wrapping
// around, and a target without tokens sends no Authorization header.
func TestLuaScriptWalksThePool(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk is not installed")
	}
	var mu sync.Mutex
	type seen struct{ uri, auth, host string }
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.URL.RequestURI(), r.Header.Get("Authorization"), r.Host})
		mu.Unlock()
	}))
	defer srv.Close()
	dir := t.TempDir()
	lua, err := writeLua(dir)
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, 37)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("tok%02d.secret", i)
	}
	pool := filepath.Join(dir, "tokens.txt")
	if err := writeLines(pool, tokens); err != nil {
		t.Fatal(err)
	}
	r := &runner{s: settings{threads: 1, conns: 1}, lua: lua}
	ctx := context.Background()
	validate := target{path: "/v1/validate?touch=false", tokens: pool}
	host := srv.Listener.Addr().String()

	index := map[string]int{}
	for i, tok := range tokens {
		index["Bearer "+tok] = i
	}
	for run := 0; run < 2; run++ {
		mu.Lock()
		got = got[:0]
		mu.Unlock()
		w, err := r.runWrk(ctx, srv.URL, validate, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		reqs := append([]seen(nil), got...)
		mu.Unlock()
		if w.Requests < int64(len(tokens)) || int64(len(reqs)) < w.Requests {
			t.Fatalf("run %d: wrk counted %d requests, the server saw %d (want at least the pool, %d)", run, w.Requests, len(reqs), len(tokens))
		}
		// wrk calls request() once more than it sends, to see whether the
		// script pipelines, so a walk starts a token later than the offset
		// it was given: what matters is that it goes through the pool in
		// order.
		first, ok := index[reqs[0].auth]
		if !ok {
			t.Fatalf("run %d: first request carries %q, no token of the pool", run, reqs[0].auth)
		}
		for i, q := range reqs {
			want := "Bearer " + tokens[(first+i)%len(tokens)]
			if q.uri != validate.path || q.auth != want || q.host != host {
				t.Fatalf("run %d, request %d: %q %q host %q, want %q %q host %q", run, i, q.uri, q.auth, q.host, validate.path, want, host)
			}
		}
	}

	mu.Lock()
	got = got[:0]
	mu.Unlock()
	if _, err := r.runWrk(ctx, srv.URL, target{path: "/healthz"}, time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) == 0 {
		t.Fatal("/healthz: the server saw no request")
	}
	for i, q := range got {
		if q.uri != "/healthz" || q.auth != "" || q.host != host {
			t.Fatalf("/healthz request %d: %q %q host %q", i, q.uri, q.auth, q.host)
		}
	}
}
