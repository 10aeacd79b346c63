package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The "under attack" phase: password-guessing attacks on a server started
// fresh on the small data set for each scenario, while validates run at a
// fixed open-loop rate. For s.attackDur, s.attackWorkers connections send
// wrong passwords for one account and as many send logins for random
// unknown emails, each as fast as the server answers. The attackers run in
// a process of their own (the bench binary re-executed, attackClientArg),
// so the CPU they take is measured apart from the server's and the
// validate generator's. Two scenarios (attackScenarios), each on its own
// server and its own pair of accounts:
//
//   - one source: every attacking connection comes straight from 127.0.0.1
//     with no X-Forwarded-For, as one machine running the attack would; the
//     per-address bucket and the account throttle should hold it back;
//   - distributed: every request carries a random client address in
//     X-Forwarded-For from the trusted loopback proxy (a botnet with
//     unlimited addresses), so the per-address buckets do not hold it back.
//
// Meanwhile a legitimate client, from its own address, logs in to another
// account with the right password and honours Retry-After. Figures per
// scenario: validate p99 during the attack against the same rate just
// before it (and, apart, the server's own request-duration histogram for
// validate over the same windows), the server's peak RSS, 5xx answers other
// than BUSY, whether the legitimate login got in, and the CPU each party
// used.

// attackScenario is one way the attack arrives.
type attackScenario struct {
	id          string // in figure ids: attack_<id>_<kind>
	label       string // in figure names
	distributed bool   // every attacking request from a random X-Forwarded-For address
	about       string // for the log and the JSON
}

var attackScenarios = []attackScenario{
	{id: "one_source", label: "one source",
		about: "every attacking connection from 127.0.0.1 itself, no X-Forwarded-For (one client address)"},
	{id: "distributed", label: "distributed", distributed: true,
		about: "every attacking request from a random public address in X-Forwarded-For"},
}

// attackKinds are the figures each scenario reports, in table order.
var attackKinds = []string{"validate_p99", "validate_p99_server", "memory", "5xx", "rate", "legit_login", "cpu"}

func attackFigureID(scenario, kind string) string { return "attack_" + scenario + "_" + kind }

// attackLegitAddr is the legitimate client's address (TEST-NET-1); the
// attackers never draw it (randomIPv4).
const attackLegitAddr = "192.0.2.10"

// attackLegitBudget is the longest the legitimate client keeps trying.
const attackLegitBudget = 20 * time.Second

// attackTally counts the answers of one group of attackers, keyed
// "status REASON" ("200", "503 BUSY"), and their transport errors.
type attackTally struct {
	Answers   map[string]int64 `json:"answers"`
	Transport map[string]int64 `json:"transport_errors,omitempty"`
	FirstErr  string           `json:"first_transport_error,omitempty"`
}

func newAttackTally() *attackTally {
	return &attackTally{Answers: map[string]int64{}, Transport: map[string]int64{}}
}

func (t *attackTally) merge(o *attackTally) {
	for k, v := range o.Answers {
		t.Answers[k] += v
	}
	for k, v := range o.Transport {
		t.Transport[k] += v
	}
	if t.FirstErr == "" {
		t.FirstErr = o.FirstErr
	}
}

func (t *attackTally) total() (answers, transport int64) {
	for _, v := range t.Answers {
		answers += v
	}
	for _, v := range t.Transport {
		transport += v
	}
	return answers, transport
}

// count is how many answers had this status (and reason, if given).
func (t *attackTally) count(status int, reason string) int64 {
	var n int64
	for k, v := range t.Answers {
		c, r := splitAnswer(k)
		if c == status && (reason == "" || r == reason) {
			n += v
		}
	}
	return n
}

// unexpected5xx is the number of 5xx answers whose reason is not BUSY.
func (t *attackTally) unexpected5xx() int64 {
	var n int64
	for k, v := range t.Answers {
		if c, r := splitAnswer(k); c >= 500 && r != "BUSY" {
			n += v
		}
	}
	return n
}

func splitAnswer(k string) (int, string) {
	c, r, _ := strings.Cut(k, " ")
	n, _ := strconv.Atoi(c)
	return n, r
}

// answerKey is "status REASON", or "status" when the body names no reason.
func answerKey(code int, body []byte) string {
	if r := reasonOf(body); r != "" {
		return strconv.Itoa(code) + " " + r
	}
	return strconv.Itoa(code)
}

// reasonOf finds "reason":"X" in an error body without a JSON decoder (the
// attackers run on the same two cores as the server).
func reasonOf(body []byte) string {
	const key = `"reason":"`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return ""
	}
	rest := body[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || j > 64 {
		return ""
	}
	return string(rest[:j])
}

// transportKind sorts a failed exchange into a few kinds.
func transportKind(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "timeout"):
		return "timeout"
	case strings.Contains(s, "reset"):
		return "reset"
	case strings.Contains(s, "EOF"):
		return "eof"
	case strings.Contains(s, "refused"):
		return "refused"
	case strings.Contains(s, "malformed"):
		return "malformed"
	default:
		return "other"
	}
}

// randomIPv4 is a public-looking unicast address: never loopback (the
// trusted proxy), 0/8, multicast or above, or the legitimate client's /24.
func randomIPv4(rng *mrand.Rand) string {
	v := rng.Uint32()
	a := 1 + int(v>>24)%223 // 1..223
	if a == 127 {
		a = 128
	}
	b, c, d := int(v>>16&0xff), int(v>>8&0xff), int(v&0xff)
	if a == 192 && b == 0 && c == 2 {
		c = 3
	}
	return fmt.Sprintf("%d.%d.%d.%d", a, b, c, d)
}

// loginRequest is a raw HTTP/1.1 login, as a trusted proxy forwards it
// when forwardedFor is set, straight from the client when it is "".
func loginRequest(buf []byte, host, forwardedFor, email, password string) []byte {
	body, _ := json.Marshal(map[string]any{"email": email, "password": password, "keep_logged_in": false})
	buf = append(buf[:0], "POST /v1/auth/login HTTP/1.1\r\nHost: "...)
	buf = append(buf, host...)
	buf = append(buf, "\r\nContent-Type: application/json"...)
	if forwardedFor != "" {
		buf = append(buf, "\r\nX-Forwarded-For: "...)
		buf = append(buf, forwardedFor...)
	}
	buf = append(buf, "\r\nContent-Length: "...)
	buf = strconv.AppendInt(buf, int64(len(body)), 10)
	buf = append(buf, "\r\n\r\n"...)
	return append(buf, body...)
}

// runAttackers runs n connections, each sending the login next draws, as
// fast as the server answers, until end; from draws each request's
// X-Forwarded-For ("": none).
func runAttackers(ctx context.Context, host string, n int, end time.Time, seed uint64,
	next func(rng *mrand.Rand) (email string), from func(rng *mrand.Rand) string) *attackTally {
	total := newAttackTally()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(seed, uint64(i)))
			t := newAttackTally()
			defer func() {
				mu.Lock()
				total.merge(t)
				mu.Unlock()
			}()
			var c *httpConn
			defer func() {
				if c != nil {
					c.c.Close()
				}
			}()
			var req, body []byte
			for ctx.Err() == nil && time.Now().Before(end) {
				if c == nil || c.broken {
					if c != nil {
						c.c.Close()
						c = nil
					}
					nc, err := dialHTTP(host)
					if err != nil {
						t.Transport["dial"]++
						if t.FirstErr == "" {
							t.FirstErr = err.Error()
						}
						time.Sleep(10 * time.Millisecond)
						continue
					}
					c = nc
				}
				req = loginRequest(req, host, from(rng), next(rng), "wrong-password-guess")
				body = body[:0]
				resp, err := c.exchange(req, &body)
				if err != nil {
					t.Transport[transportKind(err)]++
					if t.FirstErr == "" {
						t.FirstErr = err.Error()
					}
					continue
				}
				t.Answers[answerKey(resp.code, body)]++
			}
		}()
	}
	wg.Wait()
	return total
}

// attackClientArg, as the first argument, makes the bench binary the
// attack client (attackClientMain) instead of the bench.
const attackClientArg = "__attack-client"

// attackResult is what the attack client reports on its stdout.
type attackResult struct {
	OnAccount *attackTally `json:"on_account"`
	OnUnknown *attackTally `json:"on_unknown"`
}

// attackClientMain runs both groups of attackers until -end and prints
// their tallies as JSON.
func attackClientMain(args []string) int {
	fs := flag.NewFlagSet(attackClientArg, flag.ContinueOnError)
	host := fs.String("host", "", "the server's host:port")
	workers := fs.Int("workers", 200, "connections per group")
	endNS := fs.Int64("end", 0, "when to stop, in Unix nanoseconds")
	victim := fs.String("victim", "", "the account whose password is guessed")
	distributed := fs.Bool("distributed", false, "every request from a random X-Forwarded-For address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *host == "" || *victim == "" || *endNS == 0 {
		fmt.Fprintln(os.Stderr, "attack client: -host, -victim and -end are required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res := runAttack(ctx, *host, *workers, time.Unix(0, *endNS), *victim, *distributed)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "attack client:", err)
		return 1
	}
	return 0
}

// runAttack runs workers connections guessing victim's password and as
// many logging in with random unknown emails, until end.
func runAttack(ctx context.Context, host string, workers int, end time.Time, victim string, distributed bool) attackResult {
	from := func(*mrand.Rand) string { return "" }
	if distributed {
		from = randomIPv4
	}
	var res attackResult
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		res.OnAccount = runAttackers(ctx, host, workers, end, 1, func(*mrand.Rand) string { return victim }, from)
	}()
	go func() {
		defer wg.Done()
		res.OnUnknown = runAttackers(ctx, host, workers, end, 2, func(rng *mrand.Rand) string {
			return fmt.Sprintf("nobody-%016x@example.net", rng.Uint64())
		}, from)
	}()
	wg.Wait()
	return res
}

// startAttackClient starts this binary as the attack client.
func startAttackClient(ctx context.Context, host string, workers int, end time.Time, victim string, distributed bool) (*exec.Cmd, *bytes.Buffer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	args := []string{attackClientArg, "-host", host, "-workers", strconv.Itoa(workers),
		"-end", strconv.FormatInt(end.UnixNano(), 10), "-victim", victim}
	if distributed {
		args = append(args, "-distributed")
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	return cmd, &out, nil
}

// legitResult is the legitimate client's login during the attack.
type legitResult struct {
	OK       bool             `json:"ok"`
	Attempts int              `json:"attempts"`
	Seconds  float64          `json:"seconds"`
	Waited   float64          `json:"seconds_waited_for_retry_after"`
	Answers  map[string]int64 `json:"answers"`
	Err      string           `json:"error,omitempty"`
}

// legitLogin logs in to email with the right password from its own
// address, honouring Retry-After on 503 and 429 (1 s when absent), until it
// gets in or deadline passes.
func legitLogin(ctx context.Context, base, email string, deadline time.Time) (res legitResult) {
	res.Answers = map[string]int64{}
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	body, _ := json.Marshal(map[string]any{"email": email, "password": benchPassword, "keep_logged_in": false})
	for ctx.Err() == nil && time.Now().Before(deadline) {
		res.Attempts++
		rctx, cancel := context.WithDeadline(ctx, deadline)
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, base+"/v1/auth/login", bytes.NewReader(body))
		if err != nil {
			cancel()
			res.Err = err.Error()
			return res
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", attackLegitAddr)
		resp, err := client.Do(req)
		wait := time.Second
		if err != nil {
			cancel()
			res.Answers["transport error"]++
			res.Err = err.Error()
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			cancel()
			res.Answers[answerKey(resp.StatusCode, b)]++
			if resp.StatusCode == http.StatusOK {
				res.OK, res.Err = true, ""
				return res
			}
			if resp.StatusCode == http.StatusBadRequest {
				// The right password refused: not load, a failure.
				res.Err = fmt.Sprintf("login with the right password: %d %s", resp.StatusCode, b)
				return res
			}
			if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n >= 0 {
				wait = time.Duration(n) * time.Second
			}
			res.Err = fmt.Sprintf("last answer %d %s", resp.StatusCode, reasonOf(b))
		}
		if time.Now().Add(wait).After(deadline) {
			break
		}
		res.Waited += wait.Seconds()
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return res
}

// attackBench is the "under attack" phase on the small data set: each
// scenario on a server of its own, with its own victim and legitimate
// account (an account throttled in one scenario stays throttled in the
// stream the next server reads).
func (r *runner) attackBench(ctx context.Context, ds *dataset) error {
	if len(ds.emails) < 2*len(attackScenarios) {
		return fmt.Errorf("the data set has %d users; the attack needs %d", len(ds.emails), 2*len(attackScenarios))
	}
	if len(r.s.attackFlags) > 0 {
		r.note("the attacked servers ran with %s (--attack-server-flags)", strings.Join(r.s.attackFlags, " "))
	}
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		r.note("GOMEMLIMIT=%s is set in the environment: the attacked servers use it instead of --memory-limit-mib", v)
	}
	for i, sc := range attackScenarios {
		n := len(ds.emails) - 2*i
		if err := r.attackScenario(ctx, ds, sc, ds.emails[n-1], ds.emails[n-2]); err != nil {
			return fmt.Errorf("%s: %w", sc.label, err)
		}
	}
	return nil
}

// validateRoute is the validate route's label in the server's metrics.
const validateRoute = `route="GET /v1/validate"`

// attackScenario runs one scenario on a fresh server.
func (r *runner) attackScenario(ctx context.Context, ds *dataset, sc attackScenario, victim, legit string) error {
	env, addrFile := r.pprofEnv("serve-attack-" + sc.id)
	logPath := filepath.Join(r.work, "serve-attack-"+sc.id+".log")
	flags := append([]string{"--trusted-proxies", "127.0.0.1/32"}, r.s.attackFlags...)
	srv, err := startServer(ctx, r.ledger, ds.dir, logPath, env, flags...)
	if err != nil {
		return err
	}
	defer srv.stop()
	u, err := url.Parse(srv.url)
	if err != nil {
		return err
	}
	logf("attack (%s): serving %s sessions at %s with %s", sc.label, human(ds.sessions), srv.url, strings.Join(flags, " "))
	hwmStart, _, _ := procStatus(srv.pid())

	// The rate: half of a short validate peak on this server.
	validate := target{path: "/v1/validate?touch=false", tokens: ds.poolFile}
	if _, err := r.runWrk(ctx, srv.url, validate, time.Second); err != nil {
		return err
	}
	peak, err := r.runWrk(ctx, srv.url, validate, r.s.attackPeakDur)
	if err != nil {
		return err
	}
	rate := peak.rps() / 2
	tokens, err := readLines(ds.poolFile)
	if err != nil {
		return err
	}
	// Validate runs from 1 s into the attack to 1 s before its end; the
	// baseline is the same rate for as long, just before.
	runDur := r.s.attackDur - 2*time.Second
	vURL := srv.url + "/v1/validate?touch=false"
	logf("attack (%s): baseline, validate at %.0f req/s (half of %.0f) for %s", sc.label, rate, peak.rps(), runDur)
	histBase0, _ := scrapeHistogram(srv.url, "ledger_http_request_duration_seconds", validateRoute)
	baseStart, cpuSrvB, cpuSelfB := time.Now(), cpuSeconds(srv.pid()), cpuSeconds(os.Getpid())
	base, err := openLoop(ctx, vURL, tokens, rate, runDur)
	baseSecs := time.Since(baseStart).Seconds()
	baseCPU := map[string]float64{"server_cores": (cpuSeconds(srv.pid()) - cpuSrvB) / baseSecs,
		"bench_cores": (cpuSeconds(os.Getpid()) - cpuSelfB) / baseSecs}
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	histBase1, _ := scrapeHistogram(srv.url, "ledger_http_request_duration_seconds", validateRoute)
	hwmBefore, rssBefore, _ := procStatus(srv.pid())
	before := scrapeMetrics(srv.url)
	logOffset := fileSize(logPath)

	logf("attack (%s): %d connections guessing %s's password and %d trying random unknown emails, %s, for %s",
		sc.label, r.s.attackWorkers, victim, r.s.attackWorkers, sc.about, r.s.attackDur)
	start := time.Now()
	end := start.Add(r.s.attackDur)
	cpuSrv0, cpuSelf0 := cpuSeconds(srv.pid()), cpuSeconds(os.Getpid())
	client, clientOut, err := startAttackClient(ctx, u.Host, r.s.attackWorkers, end, victim, sc.distributed)
	if err != nil {
		return fmt.Errorf("attack client: %w", err)
	}
	// When the attack client is done (its last answers come after end): the
	// attack's span, the CPU used over it, and the server's validate
	// histogram up to then.
	var stopped time.Duration
	var attackCPU map[string]float64
	var clientErr error
	var histAttack promHistogram
	var histAttackErr error
	attackDone := make(chan struct{})
	go func() {
		defer close(attackDone)
		clientErr = client.Wait()
		stopped = time.Since(start)
		secs := stopped.Seconds()
		attackCPU = map[string]float64{"server_cores": (cpuSeconds(srv.pid()) - cpuSrv0) / secs,
			"bench_cores": (cpuSeconds(os.Getpid()) - cpuSelf0) / secs}
		if st := client.ProcessState; st != nil {
			attackCPU["attack_client_cores"] = (st.UserTime() + st.SystemTime()).Seconds() / secs
		}
		histAttack, histAttackErr = scrapeHistogram(srv.url, "ledger_http_request_duration_seconds", validateRoute)
	}()
	// Memory, once a second.
	var rssSeries []float64
	var maxRSS int64
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for time.Now().Before(end) && ctx.Err() == nil {
			if _, rss, err := procStatus(srv.pid()); err == nil {
				maxRSS = max(maxRSS, rss)
				rssSeries = append(rssSeries, float64(rss)/mib)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	sleepUntil(ctx, start.Add(time.Second))
	var lr legitResult
	legitDone := make(chan struct{})
	go func() {
		defer close(legitDone)
		lr = legitLogin(ctx, srv.url, legit, time.Now().Add(min(attackLegitBudget, time.Until(end))))
	}()
	duringStart := time.Now()
	during, duringErr := openLoop(ctx, vURL, tokens, rate, runDur)
	duringWall := time.Since(duringStart)
	<-legitDone
	<-attackDone
	<-sampleDone
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if clientErr != nil {
		return fmt.Errorf("attack client: %w", clientErr)
	}
	var att attackResult
	if err := json.Unmarshal(clientOut.Bytes(), &att); err != nil || att.OnAccount == nil || att.OnUnknown == nil {
		return fmt.Errorf("attack client: unreadable result (%v): %.200q", err, clientOut.String())
	}
	onAccount, onUnknown := att.OnAccount, att.OnUnknown
	hwm, rssEnd, err := procStatus(srv.pid())
	if err != nil {
		return err
	}
	after := scrapeMetrics(srv.url)
	if err := srv.waitReady(ctx, time.Minute); err != nil {
		return fmt.Errorf("after the attack: %w", err)
	}
	if err := srv.checkNoRejections(); err != nil {
		return err
	}
	errLines, errMsgs := logErrors(logPath, logOffset)
	if r.prof != "" {
		if err := r.fetchProfile(ctx, addrFile, "heap", "heap-attack-"+sc.id+".pprof"); err != nil {
			logf("heap profile: %v", err)
		}
	}

	all := newAttackTally()
	all.merge(onAccount)
	all.merge(onUnknown)
	answers, transport := all.total()
	secs := stopped.Seconds() // the attackers' last answers come after attackDur
	busy := all.count(503, "BUSY")
	logf("attack (%s): %d answers (%.0f/s), %d transport errors, attackers stopped %s after the start", sc.label, answers, float64(answers)/secs, transport, stopped.Round(time.Millisecond))

	id := func(kind string) string { return attackFigureID(sc.id, kind) }
	name := func(s string) string { return "[" + sc.label + "] " + s }
	common := map[string]any{
		"scenario": sc.id, "scenario_about": sc.about,
		"attack_seconds": secs, "connections_per_group": r.s.attackWorkers,
		"hash_concurrency_default": runtime.NumCPU(), "hash_queue_default": 4 * runtime.NumCPU(),
		"victim": victim, "legit_account": legit, "legit_address": attackLegitAddr,
		"server_flags": strings.Join(flags, " "),
	}
	cpuNote := fmt.Sprintf("CPU cores used, server / attack client / bench (validate generator, legitimate client): %.2f / %.2f / %.2f under attack; server / bench %.2f / %.2f before",
		attackCPU["server_cores"], attackCPU["attack_client_cores"], attackCPU["bench_cores"], baseCPU["server_cores"], baseCPU["bench_cores"])

	// Validate p99 during the attack against just before it.
	p99 := during.q(during.lat, 99)
	f := costFigure(id("validate_p99"),
		name(fmt.Sprintf("validate p99 under attack (%.0f req/s open loop, %d+%d attacking connections), %s sessions", rate, r.s.attackWorkers, r.s.attackWorkers, human(ds.sessions))),
		"ms", p99, base.q(base.lat, 99), "same rate, no attack", 2)
	f.Note = fmt.Sprintf("p50 %.2f vs %.2f, p99.9 %.2f vs %.2f ms; service time (from the send) p99 %.2f vs %.2f ms; the %s schedule took %.1f s to answer",
		during.q(during.lat, 50), base.q(base.lat, 50), during.q(during.lat, 99.9), base.q(base.lat, 99.9),
		during.q(during.svc, 99), base.q(base.svc, 99), runDur, duringWall.Seconds())
	d := map[string]any{"baseline": base.detail(), "under_attack": during.detail(), "validate_peak_rps": peak.rps(), "validate_peak": peak.detail(),
		"cpu_baseline": baseCPU, "cpu_under_attack": attackCPU,
		"under_attack_wall_s": duringWall.Seconds(), "schedule_s": runDur.Seconds()}
	if duringErr != nil {
		f.Note += fmt.Sprintf("; %d of %d validates failed", during.Errors, during.Sent)
		d["under_attack_error"] = duringErr.Error()
		r.note("%s: validate under attack: %v", sc.label, duringErr)
	}
	r.add(withDetail(withDetail(f, d), common))

	// The server's own view of the same validates: its request-duration
	// histogram (handler in to handler out, so without the time a request
	// waits in the kernel and for a goroutine to run it), p99 estimated by
	// interpolating within its buckets. Informational: the goal is on the
	// client's figure above.
	hb := histBase1.sub(histBase0)
	ha := histAttack.sub(histBase1)
	sp99b, overB := hb.quantile(0.99)
	sp99a, overA := ha.quantile(0.99)
	if math.IsNaN(sp99a) || math.IsNaN(sp99b) { // no validate in a window (a failed scrape): no figure
		sp99a, sp99b = 0, 0
	}
	f = costFigure(id("validate_p99_server"),
		name("validate p99 as the server measured it (ledger_http_request_duration_seconds, estimated from buckets; not the goal figure)"),
		"ms", sp99a*1000, sp99b*1000, "server-side, same rate, no attack", 0)
	// Validates run from 1 s into the attack; the window ends when the
	// attack client exits.
	servedSecs := max(stopped.Seconds()-1, 0.001)
	f.Note = fmt.Sprintf("p99 in the bucket %s during, %s before; p50 %.3f vs %.3f ms; %.0f validates served during the attack (%.0f/s from 1 s in, %.0f/s offered), %.0f before (%.0f/s)",
		ha.bucketOf(0.99), hb.bucketOf(0.99), ha.quantileMS(0.5), hb.quantileMS(0.5),
		ha.count(), ha.count()/servedSecs, rate, hb.count(), hb.count()/baseSecs)
	if overA || overB {
		f.Note += fmt.Sprintf("; beyond the last finite bucket (%g s): during %v, before %v", hb.lastFinite(), overA, overB)
	}
	hd := map[string]any{"buckets_before": hb.table(), "buckets_under_attack": ha.table(),
		"served_under_attack": ha.count(), "served_under_attack_per_s": ha.count() / servedSecs,
		"served_before": hb.count(), "served_before_per_s": hb.count() / baseSecs, "offered_per_s": rate,
		"p99_beyond_last_bucket_under_attack": overA, "p99_beyond_last_bucket_before": overB,
		"window": "before: the baseline run; under attack: from the attack's start until the attack client exited (validates still queued in the generator after that are not in it)"}
	if histAttackErr != nil {
		hd["scrape_error"] = histAttackErr.Error()
		r.note("%s: /metrics after the attack: %v", sc.label, histAttackErr)
	}
	r.add(withDetail(f, hd))

	// Peak RSS.
	f = maxFigure(id("memory"), name("server peak RSS (VmHWM) under attack, process started for the scenario"), "MiB", float64(hwm)/mib, 300)
	f.Note = fmt.Sprintf("%.0f MiB after start, %.0f MiB before the attack; VmRSS %.0f MiB at the end, at most %.0f MiB sampled once a second",
		float64(hwmStart)/mib, float64(hwmBefore)/mib, float64(rssEnd)/mib, float64(maxRSS)/mib)
	md := map[string]any{
		"vmhwm_after_start_mib": float64(hwmStart) / mib, "vmhwm_before_attack_mib": float64(hwmBefore) / mib,
		"vmrss_before_attack_mib": float64(rssBefore) / mib, "vmrss_end_mib": float64(rssEnd) / mib,
		"vmrss_max_sampled_mib": float64(maxRSS) / mib, "vmrss_mib_each_second": rssSeries,
	}
	if v, ok := after["go_gc_gomemlimit_bytes"]; ok {
		f.Note += fmt.Sprintf("; runtime memory limit %.0f MiB", v/mib)
		md["gomemlimit_mib"] = v / mib
	}
	r.add(withDetail(f, md))

	// Answers to the attackers.
	bad := all.unexpected5xx()
	f = Figure{ID: id("5xx"), Name: name("attacking logins answered 5xx other than BUSY, or not answered"), Value: float64(bad + transport), Unit: "requests", Goal: "= 0"}
	met := bad+transport == 0
	f.Met = &met
	f.Note = fmt.Sprintf("%d 5xx not BUSY, %d transport errors; of %d answers: %s", bad, transport, answers, answerSummary(all.Answers))
	r.add(withDetail(f, map[string]any{
		"on_account": onAccount, "on_unknown_emails": onUnknown,
		"answers_per_s": float64(answers) / secs, "busy": busy, "attackers_stopped_after_s": stopped.Seconds(),
		"password_checks_refused": after["ledger_password_checks_refused_total"] - before["ledger_password_checks_refused_total"],
		"server_error_log_lines":  errLines, "server_error_messages": errMsgs,
	}))
	f = Figure{ID: id("rate"), Name: name("attacking logins answered"), Value: float64(answers) / secs, Unit: "req/s"}
	accAns, accErr := onAccount.total()
	unkAns, unkErr := onUnknown.total()
	f.Note = fmt.Sprintf("one account: %d (%s); unknown emails: %d (%s)", accAns, answerSummary(onAccount.Answers), unkAns, answerSummary(onUnknown.Answers))
	r.add(withDetail(f, map[string]any{"on_account_transport_errors": accErr, "on_unknown_transport_errors": unkErr}))
	if errLines > 0 {
		r.note("%s: the server logged %d error lines during the attack (first: %s); log: %s", sc.label, errLines, strings.Join(errMsgs, "; "), logPath)
	}

	// The legitimate login.
	ok := 0.0
	if lr.OK {
		ok = 1
	}
	f = Figure{ID: id("legit_login"), Name: name("legitimate login to another account during the attack (own address, honours Retry-After)"), Value: ok, Unit: "ok", Goal: "= 1"}
	f.Met = &lr.OK
	if lr.OK {
		f.Note = fmt.Sprintf("in after %d attempts, %.1f s", lr.Attempts, lr.Seconds)
	} else {
		f.Note = fmt.Sprintf("not in after %d attempts, %.1f s", lr.Attempts, lr.Seconds)
	}
	f.Note += "; " + answerSummary(lr.Answers)
	r.add(withDetail(f, map[string]any{"legit": lr, "budget_s": min(attackLegitBudget, r.s.attackDur-time.Second).Seconds()}))
	if !lr.OK && lr.Err != "" {
		r.note("%s: legitimate login during the attack: %s", sc.label, lr.Err)
	}

	// Who used the CPU.
	f = Figure{ID: id("cpu"), Name: name("CPU used by the bench's own attack client during the attack (a separate process)"),
		Value: attackCPU["attack_client_cores"], Unit: "cores", Note: cpuNote}
	r.add(withDetail(f, map[string]any{"cpu_baseline": baseCPU, "cpu_under_attack": attackCPU, "cores": runtime.NumCPU()}))
	return nil
}

// answerSummary lists answers by count, largest first: "503 BUSY 1234, 400 5".
func answerSummary(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// costFigure compares value with baseline where lower is better: the goal
// is the largest acceptable ratio (0: informational).
func costFigure(id, name, unit string, value, baseline float64, baselineName string, maxRatio float64) Figure {
	f := Figure{ID: id, Name: name, Value: value, Unit: unit, Baseline: baseline, BaselineName: baselineName}
	if baseline > 0 {
		f.Ratio = value / baseline
	}
	if maxRatio > 0 {
		f.Goal = fmt.Sprintf("≤ %g×", maxRatio)
		met := baseline > 0 && f.Ratio <= maxRatio
		f.Met = &met
	}
	return f
}

// cpuSeconds is the user and system CPU time pid has used so far (all its
// threads), from /proc/<pid>/stat at the usual 100 ticks a second; 0 if it
// cannot be read.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logErrors counts the JSON log lines at level ERROR from offset on and
// returns up to five distinct messages.
func logErrors(path string, offset int64) (int, []string) {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return 0, nil
	}
	n := 0
	seen := map[string]bool{}
	var msgs []string
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Err   string `json:"err"`
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Level != "ERROR" {
			continue
		}
		n++
		m := strings.TrimSpace(rec.Msg + " " + rec.Err + rec.Error)
		if !seen[m] && len(msgs) < 5 {
			seen[m] = true
			msgs = append(msgs, m)
		}
	}
	return n, msgs
}
