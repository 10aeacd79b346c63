package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOpenLoopInterleaved checks that both targets are loaded in slices,
// that the tokens go only with the first, that each slice walks the pool
// on from where the previous one stopped (every token presented, not the
// first ones over and over), and that the slices' figures add up.
func TestOpenLoopInterleaved(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	paths := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.URL.Path]++
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			seen[tok]++
		}
		mu.Unlock()
		w.Header().Set("Content-Length", "2")
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	// 4 s in two slices a side at 400/s: each slice presents about 800
	// tokens (its warm-up included), so a pool of 1200 is covered only if
	// the second slice goes on from the first.
	tokens := make([]string, 1200)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("tok-%04d", i)
	}
	res, _, err := openLoopInterleaved(context.Background(), []string{srv.URL + "/v", srv.URL + "/h"}, tokens, 400, 4*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if paths["/v"] == 0 || paths["/h"] == 0 {
		t.Fatalf("requests by path %v", paths)
	}
	if got := len(seen); got != len(tokens) {
		t.Errorf("%d distinct tokens presented, want all %d", got, len(tokens))
	}
	for tok := range seen {
		if !strings.HasPrefix(tok, "tok-") {
			t.Fatalf("unexpected token %q", tok)
		}
	}
	for i, r := range res {
		if r.Sent == 0 || r.lat.TotalCount() != r.Sent || r.recorded < 3*time.Second || r.recorded > 4*time.Second {
			t.Errorf("target %d: sent %d, recorded %d latencies over %s", i, r.Sent, r.lat.TotalCount(), r.recorded)
		}
	}
	// The validate side's answers carry no token for /h: every request
	// with a token went to /v.
	var withToken int
	for _, n := range seen {
		withToken += n
	}
	if withToken != paths["/v"] {
		t.Errorf("%d requests with a token, %d to /v", withToken, paths["/v"])
	}
}
