package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
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

// TestMinSeqBeyondTheLedgerAnswersAtOnce: a made-up X-Ledger-Min-Seq gets
// 400 without waiting --min-seq-wait; a real one just written still waits
// and succeeds.
func TestMinSeqBeyondTheLedgerAnswersAtOnce(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock(), withMinSeqWait(time.Minute))
	tok, _, _ := l.signup(t, "minseq@example.com", "min seq password", true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // far below the minute a wait would take
	defer cancel()
	r, err := request(ctx, l.URL(), "GET", "/v1/validate?touch=false", tok, minSeq(999999), nil)
	if err != nil || r.Status != 400 || r.str("reason") != "INVALID_REQUEST" || !strings.Contains(r.str("message"), "beyond the end") {
		t.Fatalf("min_seq far beyond the ledger: %v %d %s, want 400 at once", err, r.Status, r.Raw)
	}
	if r := doURL(t, l.URL(), "GET", "/v1/validate?touch=false", tok, minSeq(l.lastSeq(t)), nil); r.Status != 200 {
		t.Fatalf("min_seq of the last write: %d %s", r.Status, r.Raw)
	}
}

// TestDataDirOpenToOthersIsRefused: password hashes and keys live there.
func TestDataDirOpenToOthersIsRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, newClock(), io.Discard) // makes it 0700
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := StartService(ctx, cfg)
	if err == nil {
		svc.Close(ctx)
		t.Fatal("a data dir mode 0755 was used")
	}
	if !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("refusal does not say what to do: %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	l := startLedger(t, dir, newClock())
	if r := l.do(t, "GET", "/healthz", "", nil); r.Status != 200 {
		t.Fatalf("after chmod 700: %d", r.Status)
	}
}
