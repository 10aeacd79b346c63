package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionledger/ledger/handlers/command"
)

const loginConcurrency = 2

// loginBench compares logins/s over HTTP with the raw argon2id rate at the
// same parameters and concurrency: a login is one argon2id verification plus
// a lookup, an append and the projection catching up with it.
func (r *runner) loginBench(ctx context.Context, srv *server, ds *dataset) error {
	tr := &http.Transport{MaxIdleConnsPerHost: loginConcurrency}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next atomic.Uint64
	login := func() error {
		email := ds.emails[next.Add(1)%uint64(len(ds.emails))]
		body, _ := json.Marshal(map[string]any{"email": email, "password": benchPassword, "keep_logged_in": false})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.url+"/v1/auth/login", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("login %s: %d %s", email, resp.StatusCode, b)
		}
		return nil
	}
	// The raw side hashes with the server's own hasher (x/crypto's argon2id
	// on buffers kept per caller, as the server keeps one per hash slot), so
	// the ratio is the server's overhead over the same hash.
	raw, err := command.NewArgon2id(command.OWASPParams, loginConcurrency)
	if err != nil {
		return err
	}
	hash := func() error {
		_, err := raw.Hash(benchPassword)
		return err
	}
	if err := login(); err != nil { // warm: connection, first allocation
		return err
	}
	wrap := func(fn func() error) func(time.Duration) (float64, time.Duration, error) {
		return func(d time.Duration) (float64, time.Duration, error) {
			n, el, err := concurrently(ctx, loginConcurrency, d, fn)
			return float64(n), el, err
		}
	}
	before := scrapeMetrics(srv.url)
	cpuBefore := cpuSeconds(srv.pid())
	pr, err := interleave(r.s.loginDur, time.Second, wrap(hash), wrap(login))
	if err != nil {
		return err
	}
	after := scrapeMetrics(srv.url)
	parts := loginPartsOf(before, after)
	// Collections per login and the server's peak RSS: what the collector's
	// pacing around argon2id's 19 MiB buffers trades against each other.
	if pr.opsB > 0 {
		parts.GCs = (after["go_gc_duration_seconds_count"] - before["go_gc_duration_seconds_count"]) / pr.opsB
	}
	if hwm, _, err := procStatus(srv.pid()); err == nil {
		parts.PeakRSS = float64(hwm) / mib
	}
	// The server's CPU over the whole run (it is all but idle in the hash
	// slices) per login: what a login costs the cores, whatever it waited.
	if cpuAfter := cpuSeconds(srv.pid()); cpuBefore > 0 && cpuAfter > 0 && pr.opsB > 0 {
		parts.CPU = (cpuAfter - cpuBefore) / pr.opsB * 1000
	}
	f := ratioFigure("login_rate", fmt.Sprintf("login rate (HTTP, concurrency %d)", loginConcurrency), "logins/s",
		pr.rateB(), pr.rateA(), "command.Argon2id.Hash", 0.9)
	// Each of the loginConcurrency callers is always busy, so the mean time
	// of one call is the callers' time over the calls made.
	rawHash := loginConcurrency * pr.secsA / pr.opsA
	f.Note = pr.note() + "; " + parts.note(rawHash)
	r.add(withDetail(withDetail(f, pr.detail()), map[string]any{"logins": pr.opsB, "hashes": pr.opsA,
		"argon2id":    fmt.Sprintf("m=%d KiB t=%d p=%d", command.OWASPParams.Memory, command.OWASPParams.Iterations, command.OWASPParams.Parallelism),
		"raw_hash_ms": rawHash * 1000, "client_login_ms": loginConcurrency * pr.secsB / pr.opsB * 1000, "server": parts}))
	return nil
}

// loginParts is where a login's time goes, from the server's own metrics
// over the login slices (the hash slices run in the bench process and do
// not reach the server): the HTTP request, the password check inside it,
// and the appends it waited for (fsync included). Means, in ms.
type loginParts struct {
	Logins  float64 `json:"logins"`
	Request float64 `json:"request_ms"`
	Hash    float64 `json:"hash_ms"`
	Append  float64 `json:"append_ms"`
	// Rest is the request minus its hash and append: reading the user,
	// deciding, signing, waiting for the local projection to apply the
	// session, HTTP and JSON.
	Rest float64 `json:"rest_ms"`
	// CPU is the server process's CPU time (user and system) over the
	// run per login.
	CPU float64 `json:"cpu_ms"`
	// GCs is the server's collections over the run per login.
	GCs float64 `json:"gcs_per_login"`
	// PeakRSS is the server's VmHWM at the end of the run, in MiB (the
	// process serves the login run alone).
	PeakRSS float64 `json:"peak_rss_mib"`
}

func loginPartsOf(before, after map[string]float64) loginParts {
	delta := func(series string) float64 { return after[series] - before[series] }
	mean := func(sum, count string) float64 {
		if n := delta(count); n > 0 {
			return delta(sum) / n * 1000
		}
		return 0
	}
	const route = `{route="POST /v1/auth/login"}`
	p := loginParts{
		Logins:  delta("ledger_http_request_duration_seconds_count" + route),
		Request: mean("ledger_http_request_duration_seconds_sum"+route, "ledger_http_request_duration_seconds_count"+route),
		Hash:    mean("ledger_password_hash_seconds_total", "ledger_password_hashes_total"),
		Append:  mean("ledger_append_duration_seconds_sum", "ledger_append_duration_seconds_count"),
	}
	p.Rest = p.Request - p.Hash - p.Append
	return p
}

func (p loginParts) note(rawHash float64) string {
	if p.Logins == 0 {
		return "the server's metrics did not say where a login's time goes"
	}
	s := fmt.Sprintf("a login in the server %.1f ms: password check %.1f ms (raw argon2id here %.1f ms), append %.2f ms, the rest %.2f ms",
		p.Request, p.Hash, rawHash*1000, p.Append, p.Rest)
	if p.CPU > 0 {
		s += fmt.Sprintf("; server CPU %.1f ms per login", p.CPU)
	}
	s += fmt.Sprintf("; %.2f collections per login; server peak RSS %.0f MiB", p.GCs, p.PeakRSS)
	return s
}

// concurrently runs fn in n goroutines until dur has passed and returns how
// many calls completed and how long until the last one did.
func concurrently(ctx context.Context, n int, dur time.Duration, fn func() error) (int, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(dur)
	var count atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := fn(); err != nil {
					errc <- err
					return
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	select {
	case err := <-errc:
		return 0, el, err
	default:
	}
	return int(count.Load()), el, ctx.Err()
}

// loginOnly is --only login: the login row alone on the small data set,
// served as in the full run, with a CPU profile and an execution trace of
// the server during it under --profile.
func (r *runner) loginOnly(ctx context.Context, pwHash string) error {
	small, err := seedDataset(ctx, filepath.Join(r.work, "small"), r.s.small, r.s.perUser, r.s.small, r.s.touchPool, pwHash)
	if err != nil {
		return fmt.Errorf("seed small: %w", err)
	}
	env, addrFile := r.pprofEnv("serve-login")
	srv, err := startServer(ctx, r.ledger, small.dir, filepath.Join(r.work, "serve-login.log"), env,
		"--address-rate", "1000000", "--address-burst", "1000000")
	if err != nil {
		return err
	}
	defer srv.stop()
	if r.prof == "" {
		return r.loginBench(ctx, srv, small)
	}
	secs := int(r.s.loginDur.Seconds())
	errc := make(chan error, 2)
	go func() {
		errc <- r.fetchProfile(ctx, addrFile, fmt.Sprintf("profile?seconds=%d", 2*secs-2), "cpu-login.pprof")
	}()
	go func() {
		time.Sleep(time.Duration(secs) * time.Second)
		errc <- r.fetchProfile(ctx, addrFile, "trace?seconds=3", "trace-login.out")
	}()
	err = r.loginBench(ctx, srv, small)
	for range 2 {
		if perr := <-errc; perr != nil {
			logf("profile: %v", perr)
		}
	}
	return err
}
