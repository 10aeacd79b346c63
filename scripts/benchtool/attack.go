package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The "under attack" phase: a distributed password-guessing attack on a
// server started fresh on the small data set, while validates run at a
// fixed open-loop rate. For s.attackDur, s.attackWorkers connections send
// wrong passwords for one account and as many send logins for random
// unknown emails, each as fast as the server answers, every request from a
// random client address (X-Forwarded-For from the trusted loopback proxy),
// so the per-address buckets do not hold them back. Meanwhile a legitimate
// client, from its own address, logs in to another account with the right
// password and honours Retry-After. Figures: validate p99 during the attack
// against the same rate just before it, the server's peak RSS, 5xx answers
// other than BUSY, and whether the legitimate login got in.

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

// loginRequest is a raw HTTP/1.1 login as a trusted proxy forwards it.
func loginRequest(buf []byte, host, forwardedFor, email, password string) []byte {
	body, _ := json.Marshal(map[string]any{"email": email, "password": password, "keep_logged_in": false})
	buf = append(buf[:0], "POST /v1/auth/login HTTP/1.1\r\nHost: "...)
	buf = append(buf, host...)
	buf = append(buf, "\r\nContent-Type: application/json\r\nX-Forwarded-For: "...)
	buf = append(buf, forwardedFor...)
	buf = append(buf, "\r\nContent-Length: "...)
	buf = strconv.AppendInt(buf, int64(len(body)), 10)
	buf = append(buf, "\r\n\r\n"...)
	return append(buf, body...)
}

// runAttackers runs n connections, each sending the login next draws, as
// fast as the server answers, until end.
func runAttackers(ctx context.Context, host string, n int, end time.Time, seed uint64,
	next func(rng *mrand.Rand) (email string)) *attackTally {
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
				req = loginRequest(req, host, randomIPv4(rng), next(rng), "wrong-password-guess")
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

// attackBench is the "under attack" phase on the small data set.
func (r *runner) attackBench(ctx context.Context, ds *dataset) error {
	if len(ds.emails) < 2 {
		return fmt.Errorf("the data set has %d users; the attack needs two", len(ds.emails))
	}
	victim := ds.emails[len(ds.emails)-1]
	legit := ds.emails[len(ds.emails)-2]
	env, addrFile := r.pprofEnv("serve-attack")
	logPath := filepath.Join(r.work, "serve-attack.log")
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
	logf("attack: serving %s sessions at %s with %s", human(ds.sessions), srv.url, strings.Join(flags, " "))
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
	logf("attack: baseline, validate at %.0f req/s (half of %.0f) for %s", rate, peak.rps(), runDur)
	baseStart, cpuSrvB, cpuSelfB := time.Now(), cpuSeconds(srv.pid()), cpuSeconds(os.Getpid())
	base, err := openLoop(ctx, vURL, tokens, rate, runDur)
	baseCPU := map[string]any{"server_cores": (cpuSeconds(srv.pid()) - cpuSrvB) / time.Since(baseStart).Seconds(),
		"bench_cores": (cpuSeconds(os.Getpid()) - cpuSelfB) / time.Since(baseStart).Seconds()}
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	hwmBefore, rssBefore, _ := procStatus(srv.pid())
	before := scrapeMetrics(srv.url)
	cpuSrv0, cpuSelf0 := cpuSeconds(srv.pid()), cpuSeconds(os.Getpid())
	logOffset := fileSize(logPath)

	logf("attack: %d connections guessing %s's password and %d trying random unknown emails, each request from a random address, for %s",
		r.s.attackWorkers, victim, r.s.attackWorkers, r.s.attackDur)
	start := time.Now()
	end := start.Add(r.s.attackDur)
	var wg sync.WaitGroup
	var onAccount, onUnknown *attackTally
	wg.Add(2)
	go func() {
		defer wg.Done()
		onAccount = runAttackers(ctx, u.Host, r.s.attackWorkers, end, 1, func(*mrand.Rand) string { return victim })
	}()
	go func() {
		defer wg.Done()
		onUnknown = runAttackers(ctx, u.Host, r.s.attackWorkers, end, 2, func(rng *mrand.Rand) string {
			return fmt.Sprintf("nobody-%016x@example.net", rng.Uint64())
		})
	}()
	// When the attackers are done (their last answers come after end):
	// the attack's span, and the CPU used over it.
	var stopped time.Duration
	var attackCPU map[string]any
	attackDone := make(chan struct{})
	go func() {
		defer close(attackDone)
		wg.Wait()
		stopped = time.Since(start)
		attackCPU = map[string]any{"server_cores": (cpuSeconds(srv.pid()) - cpuSrv0) / stopped.Seconds(),
			"bench_cores": (cpuSeconds(os.Getpid()) - cpuSelf0) / stopped.Seconds()}
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
		if err := r.fetchProfile(ctx, addrFile, "heap", "heap-attack.pprof"); err != nil {
			logf("heap profile: %v", err)
		}
	}

	all := newAttackTally()
	all.merge(onAccount)
	all.merge(onUnknown)
	answers, transport := all.total()
	secs := stopped.Seconds() // the attackers' last answers come after attackDur
	busy := all.count(503, "BUSY")
	logf("attack: %d answers (%.0f/s), %d transport errors, attackers stopped %s after the start", answers, float64(answers)/secs, transport, stopped.Round(time.Millisecond))

	common := map[string]any{
		"attack_seconds": secs, "connections_per_group": r.s.attackWorkers,
		"hash_concurrency_default": runtime.NumCPU(), "hash_queue_default": 4 * runtime.NumCPU(),
		"victim": victim, "legit_account": legit, "legit_address": attackLegitAddr,
		"server_flags": strings.Join(flags, " "),
	}
	if len(r.s.attackFlags) > 0 {
		r.note("the attacked server ran with %s (--attack-server-flags)", strings.Join(r.s.attackFlags, " "))
	}

	// Validate p99 during the attack against just before it.
	p99 := during.q(during.lat, 99)
	f := costFigure("attack_validate_p99",
		fmt.Sprintf("validate p99 under attack (%.0f req/s open loop, %d+%d attacking connections), %s sessions", rate, r.s.attackWorkers, r.s.attackWorkers, human(ds.sessions)),
		"ms", p99, base.q(base.lat, 99), "same rate, no attack", 2)
	f.Note = fmt.Sprintf("p50 %.2f vs %.2f, p99.9 %.2f vs %.2f ms; service time (from the send) p99 %.2f vs %.2f ms; the %s schedule took %.1f s to answer",
		during.q(during.lat, 50), base.q(base.lat, 50), during.q(during.lat, 99.9), base.q(base.lat, 99.9),
		during.q(during.svc, 99), base.q(base.svc, 99), runDur, duringWall.Seconds())
	f.Note += fmt.Sprintf("; CPU cores used by server/bench: %.2f/%.2f under attack, %.2f/%.2f before", attackCPU["server_cores"], attackCPU["bench_cores"],
		baseCPU["server_cores"], baseCPU["bench_cores"])
	d := map[string]any{"baseline": base.detail(), "under_attack": during.detail(), "validate_peak_rps": peak.rps(), "validate_peak": peak.detail(),
		"cpu_baseline": baseCPU, "cpu_under_attack": attackCPU,
		"under_attack_wall_s": duringWall.Seconds(), "schedule_s": runDur.Seconds()}
	if duringErr != nil {
		f.Note += fmt.Sprintf("; %d of %d validates failed", during.Errors, during.Sent)
		d["under_attack_error"] = duringErr.Error()
		r.note("validate under attack: %v", duringErr)
	}
	r.add(withDetail(withDetail(f, d), common))

	// Peak RSS.
	f = maxFigure("attack_memory", "server peak RSS (VmHWM) under attack, process started for the phase", "MiB", float64(hwm)/mib, 300)
	f.Note = fmt.Sprintf("%.0f MiB after start, %.0f MiB before the attack; VmRSS %.0f MiB at the end", float64(hwmStart)/mib, float64(hwmBefore)/mib, float64(rssEnd)/mib)
	r.add(withDetail(f, map[string]any{
		"vmhwm_after_start_mib": float64(hwmStart) / mib, "vmhwm_before_attack_mib": float64(hwmBefore) / mib,
		"vmrss_before_attack_mib": float64(rssBefore) / mib, "vmrss_end_mib": float64(rssEnd) / mib,
		"vmrss_max_sampled_mib": float64(maxRSS) / mib, "vmrss_mib_each_second": rssSeries,
	}))

	// Answers to the attackers.
	bad := all.unexpected5xx()
	f = Figure{ID: "attack_5xx", Name: "attacking logins answered 5xx other than BUSY, or not answered", Value: float64(bad + transport), Unit: "requests", Goal: "= 0"}
	met := bad+transport == 0
	f.Met = &met
	f.Note = fmt.Sprintf("%d 5xx not BUSY, %d transport errors; of %d answers: %s", bad, transport, answers, answerSummary(all.Answers))
	r.add(withDetail(f, map[string]any{
		"on_account": onAccount, "on_unknown_emails": onUnknown,
		"answers_per_s": float64(answers) / secs, "busy": busy, "attackers_stopped_after_s": stopped.Seconds(),
		"password_checks_refused": after["ledger_password_checks_refused_total"] - before["ledger_password_checks_refused_total"],
		"server_error_log_lines":  errLines, "server_error_messages": errMsgs,
	}))
	f = Figure{ID: "attack_rate", Name: "attacking logins answered", Value: float64(answers) / secs, Unit: "req/s"}
	accAns, accErr := onAccount.total()
	unkAns, unkErr := onUnknown.total()
	f.Note = fmt.Sprintf("one account: %d (%s); unknown emails: %d (%s)", accAns, answerSummary(onAccount.Answers), unkAns, answerSummary(onUnknown.Answers))
	r.add(withDetail(f, map[string]any{"on_account_transport_errors": accErr, "on_unknown_transport_errors": unkErr}))
	if errLines > 0 {
		r.note("the server logged %d error lines during the attack (first: %s); log: %s", errLines, strings.Join(errMsgs, "; "), logPath)
	}

	// The legitimate login.
	ok := 0.0
	if lr.OK {
		ok = 1
	}
	f = Figure{ID: "attack_legit_login", Name: "legitimate login to another account during the attack (own address, honours Retry-After)", Value: ok, Unit: "ok", Goal: "= 1"}
	f.Met = &lr.OK
	if lr.OK {
		f.Note = fmt.Sprintf("in after %d attempts, %.1f s", lr.Attempts, lr.Seconds)
	} else {
		f.Note = fmt.Sprintf("not in after %d attempts, %.1f s", lr.Attempts, lr.Seconds)
	}
	f.Note += "; " + answerSummary(lr.Answers)
	r.add(withDetail(f, map[string]any{"legit": lr, "budget_s": min(attackLegitBudget, r.s.attackDur-time.Second).Seconds()}))
	if !lr.OK && lr.Err != "" {
		r.note("legitimate login during the attack: %s", lr.Err)
	}
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
