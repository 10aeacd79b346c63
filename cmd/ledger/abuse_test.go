package main

import (
	"context"

	"fmt"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
		c.LoginThrottle = noThrottle                         // this test is about load, not guessing
	})
	l.signup(t, "bounded@example.com", "bounded password", false)
	busy := map[string]int{}
	for burst := 0; burst < 5 && (busy["known"] == 0 || busy["unknown"] == 0); burst++ {
		answers, errs := concurrently(24, func(i int) (response, error) {
			email := "bounded@example.com"
			if i%2 == 1 {
				email = fmt.Sprintf("nobody-%d@example.com", i)
			}
			return request(context.Background(), l.URL(), "POST", "/v1/auth/login", "", nil, creds{email, "wrong password", false})
		})
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
	if metricValue(t, l, "ledger_http_refusals_held_total") == 0 {
		t.Fatal("no BUSY refusal was held (the tarpit)")
	}
}

// noThrottle lets a test send many wrong passwords without being throttled.
var noThrottle = domain.LoginThrottle{After: 1 << 20, Window: time.Hour, Base: time.Second, Max: time.Second}

func withThrottle(r domain.LoginThrottle) option {
	return func(c *ServiceConfig) { c.LoginThrottle = r }
}

// TestLoginThrottleIsDecidedFromTheLog: three wrong passwords throttle the
// account; the throttle holds with the right password, on this instance
// after a restart and on another instance of the same ledger, and the
// account's session keeps working. An unknown email is throttled and
// answered identically. When it lifts, the right password works; the
// audit shows the failures and the throttle, and the unknown email's
// failures are in the log as one tally.
func TestLoginThrottleIsDecidedFromTheLog(t *testing.T) {
	rule := domain.LoginThrottle{After: 3, Window: time.Hour, Base: 30 * time.Second, Max: 2 * time.Minute}
	dir, clock := t.TempDir(), newClock()
	a := startLedger(t, dir, clock, withThrottle(rule))
	token, userID, _ := a.signup(t, "victim@example.com", "the right password", true)
	answer := func(l *testLedger, email, password string) response {
		return l.do(t, "POST", "/v1/auth/login", "", creds{email, password, false})
	}
	for i := 1; i <= 3; i++ {
		for _, email := range []string{"victim@example.com", "ghost@example.com"} {
			if r := answer(a, email, "a wrong password"); r.Status != 400 || r.str("reason") != "INVALID_LOGIN_CREDENTIALS" {
				t.Fatalf("%s, wrong password %d: %d %s", email, i, r.Status, r.Raw)
			}
		}
	}
	throttled := func(l *testLedger, where string) {
		t.Helper()
		known, unknown := answer(l, "victim@example.com", "the right password"), answer(l, "ghost@example.com", "the right password")
		if known.Status != 429 || known.str("reason") != "TOO_MANY_ATTEMPTS" || known.Header.Get("Retry-After") != "30" || known.get("args", "retry_after") != float64(30) {
			t.Fatalf("%s: right password while throttled: %d %s (Retry-After %q), want 429 TOO_MANY_ATTEMPTS after 30 s", where, known.Status, known.Raw, known.Header.Get("Retry-After"))
		}
		if unknown.Status != known.Status || string(unknown.Raw) != string(known.Raw) || unknown.Header.Get("Retry-After") != known.Header.Get("Retry-After") {
			t.Fatalf("%s: unknown email answered %d %s, the account %d %s", where, unknown.Status, unknown.Raw, known.Status, known.Raw)
		}
	}
	throttled(a, "same instance")
	if v := a.verdict(t, token); v.Status != 200 {
		t.Fatalf("the account's session after the throttle: %+v", v)
	}
	var types []string
	for _, e := range a.admin(t, "/v1/audit/users/"+userID+"/events").get("events").([]any) {
		types = append(types, e.(map[string]any)["event"].(map[string]any)["type"].(string))
	}
	if got := strings.Join(types, ","); !strings.HasSuffix(got, "login_failed,login_failed,login_failed,login_throttled") {
		t.Fatalf("audit history %s, want three login_failed and a login_throttled", got)
	}

	// The account's throttle is in the log: it survives a restart, and
	// another instance reading the same log applies it. (The unknown
	// email's is per instance, and is not checked there.)
	a.stop()
	a = startLedger(t, dir, clock, withThrottle(rule), listening)
	if r := answer(a, "victim@example.com", "the right password"); r.Status != 429 {
		t.Fatalf("after a restart: %d %s, want 429", r.Status, r.Raw)
	}
	b := startLedger(t, t.TempDir(), clock, joining(a), withThrottle(rule))
	if r := answer(b, "victim@example.com", "the right password"); r.Status != 429 || r.Header.Get("Retry-After") != "30" {
		t.Fatalf("another instance: %d %s, want 429 with Retry-After 30", r.Status, r.Raw)
	}
	tallies := 0
	for _, e := range a.events(t, eventstore.AnonSubject) {
		if p, _ := domain.DecodePayload[domain.LoginFailuresTallied](e); e.Type == domain.EventLoginFailuresTallied && p.Failures == 3 && p.Throttled == 1 && p.Emails == 1 {
			tallies++
		}
	}
	if tallies != 1 {
		t.Fatalf("%d tallies of 3 failures and 1 throttled attempt for one unknown email on %s, want the one written at shutdown", tallies, eventstore.AnonSubject)
	}

	clock.Advance(30 * time.Second)
	if r := answer(b, "victim@example.com", "the right password"); r.Status != 200 {
		t.Fatalf("right password once the throttle lifted: %d %s", r.Status, r.Raw)
	}
	if r := answer(b, "victim@example.com", "a wrong password"); r.Status != 400 {
		t.Fatalf("a wrong password after the success: %d %s, want 400 (the count started over)", r.Status, r.Raw)
	}
}

// TestUnknownEmailFloodWritesOneTally: a burst of concurrent logins for
// made-up emails gets the wrong-password answer every time, appends nothing
// while it lasts (no contention, no growth per attempt), and ends up in the
// log as one tally that counts all of it.
func TestUnknownEmailFloodWritesOneTally(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	before := l.lastSeq(t)
	const n = 48
	answers, errs := concurrently(n, func(i int) (response, error) {
		return request(context.Background(), l.URL(), "POST", "/v1/auth/login", "", nil, creds{fmt.Sprintf("made-up-%d@example.com", i), "a wrong password", false})
	})
	for i, r := range answers {
		if errs[i] != nil || r.Status != 400 || r.str("reason") != "INVALID_LOGIN_CREDENTIALS" {
			t.Fatalf("login %d: %d %s %v", i, r.Status, r.Raw, errs[i])
		}
	}
	if after := l.lastSeq(t); after != before {
		t.Fatalf("the flood appended %d events while it lasted, want none", after-before)
	}
	if err := l.unknown.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	anon := l.events(t, eventstore.AnonSubject)
	if l.lastSeq(t) != before+1 || len(anon) != 1 {
		t.Fatalf("after the flush: %d new events, %d on %s; want one tally", l.lastSeq(t)-before, len(anon), eventstore.AnonSubject)
	}
	if p, err := domain.DecodePayload[domain.LoginFailuresTallied](anon[0]); err != nil || p.Failures != n || p.Emails != n || p.Throttled != 0 {
		t.Fatalf("tally %s: %+v %v", anon[0].Payload, p, err)
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
	l.signup(t, "private@example.com", "a private password", false)
	l.stop() // flushes Pebble's memtable to files
	files := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("%s has mode %#o: open to other users", path, info.Mode().Perm())
		}
		if !d.IsDir() {
			files++
		}
		return nil
	})
	if err != nil || files < 10 {
		t.Fatalf("walking the data dir (%d files): %v", files, err)
	}
}
