package main

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// writeLoad runs login→logout cycles against instances and records every
// write that was acknowledged.
type writeLoad struct {
	t     *testing.T
	email string
	pw    string

	mu      sync.Mutex
	logins  map[string]uint64 // session id -> acked seq
	logouts map[string]uint64 // session id -> acked seq
	tokens  map[string]string // session id -> token, for logged-out sessions
	failed  int               // non-2xx answers (expected while NATS fails over)
	// acked holds when each acknowledged login was sent and answered.
	acked [][2]time.Time

	cycles atomic.Int64 // completed login+logout cycles
	stop   chan struct{}
	wg     sync.WaitGroup
}

func newWriteLoad(t *testing.T, email, pw string) *writeLoad {
	return &writeLoad{t: t, email: email, pw: pw, logins: map[string]uint64{}, logouts: map[string]uint64{},
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
				w.cycle(baseURL)
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

func (w *writeLoad) cycle(base string) {
	sent := time.Now()
	r := doURL(w.t, base, "POST", "/v1/auth/login", "", nil, creds{w.email, w.pw, true})
	if r.Status != 200 {
		w.fail()
		return
	}
	tok, sid, seq := r.str("response", "token"), r.str("response", "session_id"), seqOf(w.t, r)
	w.mu.Lock()
	w.logins[sid] = seq
	w.acked = append(w.acked, [2]time.Time{sent, time.Now()})
	w.mu.Unlock()
	for {
		r := doURL(w.t, base, "POST", "/v1/auth/logout", tok, minSeq(seq), nil)
		switch {
		case r.Status == 200:
			w.mu.Lock()
			w.logouts[sid] = seqOf(w.t, r)
			w.tokens[sid] = tok
			w.mu.Unlock()
			w.cycles.Add(1)
			return
		case r.str("reason") == "TOKEN_REVOKED":
			return // an earlier, unacknowledged attempt landed
		}
		w.fail()
		select {
		case <-w.stop:
			return
		default:
		}
	}
}

func (w *writeLoad) finish() {
	close(w.stop)
	w.wg.Wait()
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
func (w *writeLoad) checkInLog(l *testLedger) {
	t := w.t
	t.Helper()
	started, loggedOut, ids := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, e := range l.events("") {
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
	c := startNATSCluster(t)
	clock := newClock()
	a := startLedger(t, t.TempDir(), clock, onCluster(c), withMaxLag(2*time.Second))
	b := startLedger(t, t.TempDir(), clock, onCluster(c), withMaxLag(2*time.Second))
	const email, pw = "nodeloss@example.com", "node loss password"
	a.signup(email, pw, true)
	eventually(t, 10*time.Second, "B to know the user", func() bool { return b.proj.Applied() >= a.lastSeq() })

	w := newWriteLoad(t, email, pw)
	w.start(a.URL(), 2)
	w.start(b.URL(), 2)
	eventually(t, 60*time.Second, "writes before the fault", func() bool { return w.cycles.Load() >= 20 })

	leader := c.StreamLeader("LEDGER")
	if leader < 0 {
		t.Fatal("no stream leader")
	}
	before := w.cycles.Load()
	stoppedAt := time.Now()
	c.Stop(leader)
	down := time.Since(stoppedAt)
	eventually(t, 60*time.Second, "writes to resume on the two remaining nodes", func() bool { return w.cycles.Load() >= before+12 })
	resumed, _ := w.firstAckedAfter(stoppedAt)
	newLeader := c.StreamLeader("LEDGER")

	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	rejoined := w.cycles.Load()
	eventually(t, 60*time.Second, "writes after the node rejoined", func() bool { return w.cycles.Load() >= rejoined+8 })
	w.finish()

	report(t, "stream leader %s stopped (shutdown took %s), new leader node %d: first login sent after the stop acked %s after it; %d acked logins, %d acked logouts, %d failed requests",
		c.NodeName(leader), down.Round(time.Millisecond), newLeader+1, resumed.Round(time.Millisecond), len(w.logins), len(w.logouts), w.failed)
	w.checkInLog(a)
	converge(t, 60*time.Second, a, b)
	for sid, tok := range w.tokens {
		for name, l := range map[string]*testLedger{"A": a, "B": b} {
			if v := l.verdict(tok); v.Reason != "TOKEN_REVOKED" {
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
	c := startNATSCluster(t)
	clock := newClock()
	const maxLag = time.Second
	a := startLedger(t, t.TempDir(), clock, onCluster(c), withMaxLag(maxLag))
	b := startLedger(t, t.TempDir(), clock, onCluster(c), withMaxLag(maxLag))
	const email, pw = "down@example.com", "nats down password"
	valid, _, _ := a.signup(email, pw, true)
	revoked, _ := a.login(email, pw, true)
	victim, _ := a.login(email, pw, true)
	if r := a.do("POST", "/v1/auth/logout", revoked, nil); r.Status != 200 {
		t.Fatalf("logout: %s", r.Raw)
	}
	if v := a.verdict(valid); v.Status != 200 {
		t.Fatalf("before the outage: %+v", v)
	}

	// Validate continuously on A while NATS goes away and comes back.
	type observation struct {
		start   time.Time
		token   string
		status  int
		reason  string
		message string
	}
	var (
		obsMu sync.Mutex
		obs   []observation
	)
	stopPoll := make(chan struct{})
	polled := make(chan struct{})
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
				r := doURL(t, a.URL(), "GET", "/v1/validate?touch=false", tok, nil, nil)
				obsMu.Lock()
				obs = append(obs, observation{start, tok, r.Status, r.str("reason"), r.str("message")})
				obsMu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	c.Shutdown()
	allDown := time.Now()
	for name, l := range map[string]*testLedger{"A": a, "B": b} {
		eventually(t, 30*time.Second, name+" to fail closed", func() bool {
			v := l.verdict(valid)
			return v.Status == 503 && v.Reason == "PROJECTION_BEHIND"
		})
		if r := l.do("GET", "/readyz", "", nil); r.Status != 503 {
			t.Errorf("%s /readyz with NATS down: %d %s", name, r.Status, r.Raw)
		}
	}
	failedClosed := time.Since(allDown)
	// A write cannot be acknowledged now. The ledger keeps retrying the
	// append for a while (it may still land once NATS is back), so give up
	// waiting early, and use a session whose fate does not matter.
	quick := &http.Client{Timeout: 2 * time.Second}
	req, _ := http.NewRequest("POST", a.URL()+"/v1/auth/logout", nil)
	req.Header.Set("Authorization", "Bearer "+victim)
	if res, err := quick.Do(req); err == nil {
		res.Body.Close()
		if res.StatusCode < 500 {
			t.Errorf("a write with NATS down answered %d", res.StatusCode)
		}
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
		eventually(t, 60*time.Second, name+" to serve again", func() bool { return l.verdict(valid).Status == 200 })
		eventually(t, 30*time.Second, name+" to be ready again", func() bool { return l.do("GET", "/readyz", "", nil).Status == 200 })
	}
	servedAgain := time.Since(recovering)
	close(stopPoll)
	<-polled

	// Every 200 must have been decided while the instance could still
	// vouch for its state: no later than max-lag after the last moment a
	// NATS server could have answered it, or after NATS was back.
	var closed int
	for _, o := range obs {
		switch {
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
	r := doURL(t, b.URL(), "POST", "/v1/auth/logout", valid, nil, nil)
	if r.Status != 200 {
		t.Fatalf("logout on B after recovery: %d %s", r.Status, r.Raw)
	}
	r = doURL(t, a.URL(), "GET", "/v1/validate?touch=false", valid, minSeq(seqOf(t, r)), nil)
	if r.Status != 401 || r.str("revoked_by") != "logout" {
		t.Fatalf("A after logout on B: %d %s", r.Status, r.Raw)
	}
	converge(t, 30*time.Second, a, b)
}
