package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestBareHandler(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(bareHandler))
	defer srv.Close()
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequest(method, srv.URL+"/v1/validate?touch=false", strings.NewReader(`{"x":1}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer whatever")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %q", method, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var v struct {
			Valid     bool   `json:"valid"`
			UserID    string `json:"user_id"`
			SessionID string `json:"session_id"`
			Role      string `json:"role"`
		}
		if err := json.Unmarshal(body, &v); err != nil || !v.Valid || v.UserID == "" || v.SessionID == "" || v.Role == "" {
			t.Fatalf("%s: body %s (%v)", method, body, err)
		}
	}
}

// TestInterleaveN checks the order of the slices (A B C, C B A, ...) and
// what pairOf makes of the rounds.
func TestInterleaveN(t *testing.T) {
	var order []string
	fn := func(name string, rate float64) func(time.Duration) (float64, time.Duration, error) {
		return func(d time.Duration) (float64, time.Duration, error) {
			order = append(order, name)
			return rate * d.Seconds(), d, nil
		}
	}
	ops, secs, rates, err := interleaveN(3*time.Second, time.Second, fn("a", 100), fn("b", 80), fn("c", 200))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(order, ""), "abccbaabc"; got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
	if len(rates) != 3 || secs[0] != 3 || ops[2] != 600 {
		t.Fatalf("rates %v secs %v ops %v", rates, secs, ops)
	}
	p := pairOf(ops, secs, rates, 2, 1)
	if p.rateA() != 200 || p.rateB() != 80 || len(p.sliceRatios) != 3 || p.sliceRatios[0] != 0.4 {
		t.Fatalf("pair %+v", p)
	}
}

// TestBareBodySize keeps the bare answer the size of validate's (310 bytes
// for a seeded session, with a newline) within a few bytes.
func TestBareBodySize(t *testing.T) {
	if n := len(bareBody); n < 290 || n > 330 {
		t.Fatalf("bare body is %d bytes", n)
	}
}
