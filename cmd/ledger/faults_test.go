package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// writeLoad runs login→logout cycles against instances and records every
// write that was acknowledged. Its workers never touch a testing.T: an
// answer that breaks the API contract is recorded and stops the worker, and
// the test goroutine reports it (finish, errors).
type writeLoad struct {
	email string
	pw    string

	mu      sync.Mutex
	logins  map[string]uint64 // session id -> acked seq
	logouts map[string]uint64 // session id -> acked seq
	tokens  map[string]string // session id -> token, for logged-out sessions
	failed  int               // non-2xx answers or none (expected while NATS fails over)
	errs    []error           // broken answers: reported by the test goroutine
	// acked holds when each acknowledged login was sent and answered.
	acked [][2]time.Time

	cycles atomic.Int64 // completed login+logout cycles
	stop   chan struct{}
	wg     sync.WaitGroup
}

func newWriteLoad(email, pw string) *writeLoad {
	return &writeLoad{email: email, pw: pw, logins: map[string]uint64{}, logouts: map[string]uint64{},
		tokens: map[string]string{}, stop: make(chan struct{})}
}

func (w *writeLoad) start(baseURL string, workers int) {
	for range workers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for {
				select {
				case <-w.stop:
					return
				default:
				}
				if err := w.cycle(baseURL); err != nil {
					w.mu.Lock()
					w.errs = append(w.errs, err)
					w.mu.Unlock()
					return
				}
			}
		}()
	}
}

func (w *writeLoad) fail() {
	w.mu.Lock()
	w.failed++
	w.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
}

// err is every broken answer so far, or nil.
func (w *writeLoad) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return errors.Join(w.errs...)
}

// waitCycles waits until n more cycles than from have completed.
func (w *writeLoad) waitCycles(t *testing.T, within time.Duration, what string, from, n int64) {
	t.Helper()
	checkFor(t, within, 5*time.Millisecond, func() error {
		if got := w.cycles.Load() - from; got < n {
			return fmt.Errorf("%s: %d cycles completed, want %d (%d failed requests; broken answers: %v)", what, got, n, w.failedCount(), w.err())
		}
		return nil
	})
}

func (w *writeLoad) failedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

// answered is a request's outcome under load: an answer, or none (ok is
// false), which is expected while an instance or NATS is going away. An
// answer that is not JSON is an error.
func answered(r response, err error) (response, bool, error) {
	switch {
	case errors.Is(err, errNoAnswer):
		return r, false, nil
	case err != nil:
		return r, false, err
	}
	return r, true, nil
}

// cycle logs in and out once; it returns an error only for an answer that
// breaks the API contract.
func (w *writeLoad) cycle(base string) error {
	ctx := context.Background()
	sent := time.Now()
	r, ok, err := answered(request(ctx, base, "POST", "/v1/auth/login", "", nil, creds{w.email, w.pw, true}))
	if err != nil {
		return err
	}
	if !ok || r.Status != 200 {
		w.fail()
		return nil
	}
	seq, err := seqFrom(r)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	tok, sid := r.str("response", "token"), r.str("response", "session_id")
	w.mu.Lock()
	w.logins[sid] = seq
	w.acked = append(w.acked, [2]time.Time{sent, time.Now()})
	w.mu.Unlock()
	for {
		r, ok, err := answered(request(ctx, base, "POST", "/v1/auth/logout", tok, minSeq(seq), nil))
		if err != nil {
			return err
		}
		switch {
		case ok && r.Status == 200:
			out, err := seqFrom(r)
			if err != nil {
				return fmt.Errorf("logout: %w", err)
			}
			w.mu.Lock()
			w.logouts[sid] = out
			w.tokens[sid] = tok
			w.mu.Unlock()
			w.cycles.Add(1)
			return nil
		case ok && r.str("reason") == "TOKEN_REVOKED":
			return nil // an earlier, unacknowledged attempt landed
		}
		w.fail()
		select {
		case <-w.stop:
			return nil
		default:
		}
	}
}

// finish stops the workers and reports every broken answer they got.
func (w *writeLoad) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	for _, err := range w.errs {
		t.Errorf("write load: %v", err)
	}
}

// firstAckedAfter is how long after t the first login sent at or after t
// was acknowledged.
func (w *writeLoad) firstAckedAfter(t time.Time) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var best time.Duration
	found := false
	for _, a := range w.acked {
		if !a[0].Before(t) && (!found || a[1].Sub(t) < best) {
			best, found = a[1].Sub(t), true
		}
	}
	return best, found
}

// checkInLog verifies that every acknowledged write is in the stream.
func (w *writeLoad) checkInLog(t *testing.T, l *testLedger) {
	t.Helper()
	started, loggedOut, ids := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, e := range l.events(t, "") {
		if ids[e.ID] {
			t.Errorf("event %s stored twice", e.ID)
		}
		ids[e.ID] = true
		switch e.Type {
		case domain.EventSessionStarted:
			started[e.SessionID] = true
		case domain.EventSessionLoggedOut:
			loggedOut[e.SessionID] = true
		}
	}
	for sid, seq := range w.logins {
		if !started[sid] {
			t.Errorf("acknowledged login (seq %d, session %s) is not in the log", seq, sid)
		}
	}
	for sid, seq := range w.logouts {
		if !loggedOut[sid] {
			t.Errorf("acknowledged logout (seq %d, session %s) is not in the log", seq, sid)
		}
	}
}

// TestReplicasSurviveNATSNodeLoss: the stream leader's node stops while
// both instances take logins and logouts. Every acknowledged write is in
// the log afterwards, writes resume once a new leader is elected, and both
// instances converge to the same projection.
func TestReplicasSurviveNATSNodeLoss(t *testing.T) {
	parallelFault(t)
	c := startNATSCluster(t)
	clock := newClock()
	a := startLedger(t, t.TempDir(), clock, onCluster(c), withMaxLag(2*time.Second))
	b := startLedger(t, t.TempDir(), clock, onCluster(c), withMaxLag(2*time.Second))
	const email, pw = "nodeloss@example.com", "node loss password"
	a.signup(t, email, pw, true)
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got, want := b.proj.Applied(), a.lastSeq(t); got < want {
			return fmt.Errorf("B applied_seq %d, want at least %d (the signup)", got, want)
		}
		return nil
	})

	w := newWriteLoad(email, pw)
	w.start(a.URL(), 2)
	w.start(b.URL(), 2)
	w.waitCycles(t, 60*time.Second, "writes before the fault", 0, 20)

	leader := c.StreamLeader("LEDGER")
	if leader < 0 {
		t.Fatal("no stream leader")
	}
	before := w.cycles.Load()
	stoppedAt := time.Now()
	c.Stop(leader)
	down := time.Since(stoppedAt)
	w.waitCycles(t, 60*time.Second, "writes to resume on the two remaining nodes", before, 12)
	resumed, _ := w.firstAckedAfter(stoppedAt)
	newLeader := c.StreamLeader("LEDGER")

	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	rejoined := w.cycles.Load()
	w.waitCycles(t, 60*time.Second, "writes after the node rejoined", rejoined, 8)
	w.finish(t)

	report(t, "stream leader %s stopped (shutdown took %s), new leader node %d: first login sent after the stop acked %s after it; %d acked logins, %d acked logouts, %d failed requests",
		c.NodeName(leader), down.Round(time.Millisecond), newLeader+1, resumed.Round(time.Millisecond), len(w.logins), len(w.logouts), w.failed)
	w.checkInLog(t, a)
	converge(t, 60*time.Second, a, b)
	for sid, tok := range w.tokens {
		for name, l := range map[string]*testLedger{"A": a, "B": b} {
			if v := l.verdict(t, tok); v.Reason != "TOKEN_REVOKED" {
				t.Fatalf("%s: session %s logged out but verdict %+v", name, sid, v)
			}
		}
	}
}

// TestReplicasFailClosedWhenNATSDown: with every NATS server gone, an
// instance stops vouching for tokens within max-lag (503
// PROJECTION_BEHIND, never a stale 200) and /readyz fails; when NATS comes
// back it catches up and serves again, without being restarted.
func TestReplicasFailClosedWhenNATSDown(t *testing.T) {
	parallelFault(t)
	c := startNATSCluster(t)
	clock := newClock()
	const maxLag = time.Second
	a := startLedger(t, t.TempDir(), clock, onCluster(c), withMaxLag(maxLag))
	b := startLedger(t, t.TempDir(), clock, onCluster(c), withMaxLag(maxLag))
	const email, pw = "down@example.com", "nats down password"
	valid, _, _ := a.signup(t, email, pw, true)
	revoked, _ := a.login(t, email, pw, true)
	victim, _ := a.login(t, email, pw, true)
	if r := a.do(t, "POST", "/v1/auth/logout", revoked, nil); r.Status != 200 {
		t.Fatalf("logout: %s", r.Raw)
	}
	if v := a.verdict(t, valid); v.Status != 200 {
		t.Fatalf("before the outage: %+v", v)
	}

	// Validate continuously on A while NATS goes away and comes back.
	type observation struct {
		start   time.Time
		token   string
		status  int
		reason  string
		message string
		err     error // no answer, or not JSON
	}
	var (
		obsMu sync.Mutex
		obs   []observation
	)
	stopPoll := make(chan struct{})
	polled := make(chan struct{})
	// Stopped below, or here if the test ends early: never left polling.
	stopPolling := sync.OnceFunc(func() { close(stopPoll); <-polled })
	defer stopPolling()
	go func() {
		defer close(polled)
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			for _, tok := range []string{valid, revoked} {
				start := time.Now()
				r, err := request(context.Background(), a.URL(), "GET", "/v1/validate?touch=false", tok, nil, nil)
				obsMu.Lock()
				obs = append(obs, observation{start, tok, r.Status, r.str("reason"), r.str("message"), err})
				obsMu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	c.Shutdown()
	allDown := time.Now()
	for name, l := range map[string]*testLedger{"A": a, "B": b} {
		checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
			if v := l.verdict(t, valid); v.Status != 503 || v.Reason != "PROJECTION_BEHIND" {
				return fmt.Errorf("%s with NATS down: verdict %+v, want 503 PROJECTION_BEHIND", name, v)
			}
			return nil
		})
		if r := l.do(t, "GET", "/readyz", "", nil); r.Status != 503 {
			t.Errorf("%s /readyz with NATS down: %d %s", name, r.Status, r.Raw)
		}
	}
	failedClosed := time.Since(allDown)
	// A write cannot be acknowledged now. The ledger keeps retrying the
	// append for a while (it may still land once NATS is back), so give up
	// waiting early, and use a session whose fate does not matter.
	quick, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	r, err := request(quick, a.URL(), "POST", "/v1/auth/logout", victim, nil, nil)
	cancel()
	switch {
	case errors.Is(err, errNoAnswer): // gave up waiting
	case err != nil:
		t.Errorf("a write with NATS down: %v", err)
	case r.Status < 500:
		t.Errorf("a write with NATS down answered %d %s", r.Status, r.Raw)
	}

	recovering := time.Now()
	for i := range c.Size() {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	clusterBack := time.Since(recovering)
	for name, l := range map[string]*testLedger{"A": a, "B": b} {
		checkFor(t, 60*time.Second, 5*time.Millisecond, func() error {
			if v := l.verdict(t, valid); v.Status != 200 {
				return fmt.Errorf("%s after NATS came back: verdict %+v, want 200", name, v)
			}
			return nil
		})
		checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
			if r := l.do(t, "GET", "/readyz", "", nil); r.Status != 200 {
				return fmt.Errorf("%s after NATS came back: /readyz %d %s", name, r.Status, r.Raw)
			}
			return nil
		})
	}
	servedAgain := time.Since(recovering)
	stopPolling()

	// Every 200 must have been decided while the instance could still
	// vouch for its state: no later than max-lag after the last moment a
	// NATS server could have answered it, or after NATS was back.
	var closed int
	for _, o := range obs {
		switch {
		case o.err != nil:
			t.Errorf("validate at %s: %v", o.start.Format(time.RFC3339Nano), o.err)
		case o.token == revoked && o.status == 200:
			t.Errorf("revoked token validated at %s", o.start.Format(time.RFC3339Nano))
		case o.status == 200 && !o.start.Before(allDown.Add(maxLag)) && o.start.Before(recovering):
			t.Errorf("stale 200: request at %s, %s after every NATS server was down (max-lag %s)",
				o.start.Format(time.RFC3339Nano), o.start.Sub(allDown), maxLag)
		case o.status == 503:
			closed++
			if o.reason != "PROJECTION_BEHIND" {
				t.Errorf("503 with reason %q: %s", o.reason, o.message)
			}
		case o.status != 200 && o.status != 401:
			t.Errorf("unexpected answer %d %s %s", o.status, o.reason, o.message)
		}
	}
	if closed == 0 {
		t.Error("the poller never saw validate fail closed")
	}
	report(t, "all NATS down: validate failed closed %s after the last server stopped (max-lag %s); NATS restarted and ready in %s, both instances serving again %s after the restart began (A restarted its subscription %d times, %d for a stall); %d validations observed, %d answered 503",
		failedClosed.Round(time.Millisecond), maxLag, clusterBack.Round(time.Millisecond), servedAgain.Round(time.Millisecond),
		strings.Count(a.logs.String(), "restarting from checkpoint"), strings.Count(a.logs.String(), "projection stalled"), len(obs), closed)

	// Writes work again and reach the other instance.
	r = doURL(t, b.URL(), "POST", "/v1/auth/logout", valid, nil, nil)
	if r.Status != 200 {
		t.Fatalf("logout on B after recovery: %d %s", r.Status, r.Raw)
	}
	r = doURL(t, a.URL(), "GET", "/v1/validate?touch=false", valid, minSeq(seqOf(t, r)), nil)
	if r.Status != 401 || r.str("revoked_by") != "logout" {
		t.Fatalf("A after logout on B: %d %s", r.Status, r.Raw)
	}
	converge(t, 30*time.Second, a, b)
}
