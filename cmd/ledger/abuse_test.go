package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestPasswordChecksAreBounded: with one argon2id slot and one short wait,
// a burst of logins gets only the two answers a caller can act on: the
// ordinary 400 (wrong password and unknown email alike) or 503 BUSY with
// Retry-After, never a 500, and an unknown email is refused for load
// exactly as a known one is.
func TestPasswordChecksAreBounded(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock(), func(c *ServiceConfig) {
		c.HashConcurrency, c.HashQueue, c.HashWait = 1, 1, 1 // a waiter gives up at once
	})
	l.signup(t, "bounded@example.com", "bounded password", false)
	busy := map[string]int{}
	for burst := 0; burst < 5 && (busy["known"] == 0 || busy["unknown"] == 0); burst++ {
		var wg sync.WaitGroup
		answers := make([]response, 24)
		errs := make([]error, len(answers))
		for i := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				email := "bounded@example.com"
				if i%2 == 1 {
					email = fmt.Sprintf("nobody-%d@example.com", i)
				}
				answers[i], errs[i] = request(context.Background(), l.URL(), "POST", "/v1/auth/login", "", nil, creds{email, "wrong password", false})
			}()
		}
		wg.Wait()
		for i, r := range answers {
			who := map[bool]string{true: "known", false: "unknown"}[i%2 == 0]
			switch {
			case errs[i] != nil:
				t.Fatalf("login %d: %v", i, errs[i])
			case r.Status == 400 && r.str("reason") == "INVALID_LOGIN_CREDENTIALS":
			case r.Status == 503 && r.str("reason") == "BUSY" && r.Header.Get("Retry-After") != "":
				busy[who]++
			default:
				t.Fatalf("login %d (%s email): %d %s, want 400 INVALID_LOGIN_CREDENTIALS or 503 BUSY with Retry-After", i, who, r.Status, r.Raw)
			}
		}
	}
	if busy["known"] == 0 || busy["unknown"] == 0 {
		t.Fatalf("no burst of 24 concurrent logins was refused for both kinds of email (%v): the bound is not applied", busy)
	}
	if metricValue(t, l, "ledger_password_checks_refused_total") == 0 {
		t.Fatal("refusals not counted")
	}
}
