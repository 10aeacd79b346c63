package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// validateResult carries what the scale comparison needs.
type validateResult struct {
	validatePeak   float64
	healthzPeak    float64
	barePeak       float64 // the bare net/http server, interleaved with both
	hwmBeforeTouch int64   // server VmHWM before the touched run
}

// serveSmall serves the small data set, letting the server catch up from
// the stream itself: validate figures, then logins.
func (r *runner) serveSmall(ctx context.Context, ds *dataset) (validateResult, error) {
	env, addrFile := r.pprofEnv("serve-small")
	// The login figure compares logins with raw argon2id, all from this
	// one address: the per-address limit (20, then one a second) would
	// refuse nearly all of them, so it is set where it never binds (0 would
	// mean the default). The attack phase keeps the default.
	srv, err := startServer(ctx, r.ledger, ds.dir, filepath.Join(r.work, "serve-small.log"), env,
		"--address-rate", "1000000", "--address-burst", "1000000")
	if err != nil {
		return validateResult{}, err
	}
	defer srv.stop()
	catchUpRate := float64(ds.events) / max(srv.catchUp.Seconds(), 1e-9)
	logf("serving %s sessions at %s (caught up %d events in %s, %.0f events/s)", human(ds.sessions), srv.url, ds.events,
		srv.catchUp.Round(time.Millisecond), catchUpRate)
	r.catchUp = map[string]any{"events": ds.events, "seconds": srv.catchUp.Seconds(), "events_per_s": catchUpRate}
	res, err := r.measureValidate(ctx, srv, ds, "", true, addrFile)
	if err != nil {
		return res, err
	}
	if err := r.loginBench(ctx, srv, ds); err != nil {
		return res, fmt.Errorf("login: %w", err)
	}
	return res, srv.checkNoRejections()
}

// pastDedupeWindow waits, unless --no-dedupe-wait, until JetStream's
// 2-minute duplicate window over ds's seeded events has passed. JetStream
// keeps the message ids of that window in memory and rebuilds the map when
// it starts; just after seeding it holds every seeded event, which no
// production server (or a rebuild of a production stream) carries. It
// reports whether the window is still open and how long it waited.
func (r *runner) pastDedupeWindow(ctx context.Context, ds *dataset, what string) (inWindow bool, waited time.Duration, err error) {
	const window = 2*time.Minute + 5*time.Second
	waited = window - time.Since(ds.seededAt)
	if waited <= 0 || !r.s.dedupeWait {
		return time.Since(ds.seededAt) < 2*time.Minute, 0, nil
	}
	logf("%swaiting %s for JetStream's duplicate window over the seeded events to pass", what, waited.Round(time.Second))
	select {
	case <-time.After(waited):
	case <-ctx.Done():
		return true, waited, ctx.Err()
	}
	return false, waited, nil
}

// serveLarge serves the large data set, whose projection `ledger rebuild`
// built: validate figures and the server's peak RSS.
func (r *runner) serveLarge(ctx context.Context, ds *dataset) (validateResult, error) {
	inWindow, _, err := r.pastDedupeWindow(ctx, ds, "")
	if err != nil {
		return validateResult{}, err
	}
	env, addrFile := r.pprofEnv("serve-large")
	if len(r.s.largeEnv) > 0 {
		env = append(env, r.s.largeEnv...)
		r.note("the large data set's server ran with %s in its environment (--large-server-env)", strings.Join(r.s.largeEnv, " "))
	}
	srv, err := startServer(ctx, r.ledger, ds.dir, filepath.Join(r.work, "serve-large.log"), env)
	if err != nil {
		return validateResult{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.stop()
		}
	}()
	logf("serving %s sessions at %s (started in %s)", human(ds.sessions), srv.url, srv.startup.Round(time.Millisecond))
	hwmStart, rssStart, _ := procStatus(srv.pid())
	res, err := r.measureValidate(ctx, srv, ds, "_large", r.s.touchLarge, addrFile)
	if err != nil {
		return res, err
	}
	hwm, rss, err := procStatus(srv.pid())
	if err != nil {
		return res, err
	}
	if err := srv.checkNoRejections(); err != nil {
		return res, err
	}
	if r.prof != "" {
		if err := r.fetchProfile(ctx, addrFile, "heap", "heap-large.pprof"); err != nil {
			logf("heap profile: %v", err)
		}
	}
	srv.stop()
	stopped = true
	f := maxFigure("memory", fmt.Sprintf("server peak RSS (VmHWM), %s live sessions", human(ds.sessions)), "MiB", float64(hwm)/mib, 300)
	f.Note = fmt.Sprintf("%.0f MiB after start", float64(hwmStart)/mib)
	if r.s.touchLarge {
		f.Note += fmt.Sprintf(", %.0f MiB before the touched run", float64(res.hwmBeforeTouch)/mib)
	}
	f = withDetail(f, map[string]any{
		"vmhwm_after_start_mib":        float64(hwmStart) / mib,
		"vmhwm_before_touched_run_mib": float64(res.hwmBeforeTouch) / mib,
		"vmrss_after_start_mib":        float64(rssStart) / mib,
		"vmrss_end_mib":                float64(rss) / mib,
		"startup_seconds":              srv.startup.Seconds(),
		"dedupe_window_rebuilt":        inWindow,
		"touched_run":                  r.s.touchLarge,
	})
	r.add(f)
	if inWindow {
		r.note("the large server started within JetStream's 2-minute duplicate window of the seeding, so its peak RSS includes the message ids of every seeded event (--no-dedupe-wait or a short run)")
	}
	return res, nil
}

// measureValidate runs the validate figures against a serving ledger.
func (r *runner) measureValidate(ctx context.Context, srv *server, ds *dataset, suffix string, touch bool, addrFile string) (validateResult, error) {
	size := human(ds.sessions)
	// The server's CPU is counted during each run of healthz and validate
	// (and the bare server's during its own): CPU per request is steadier
	// than a rate on two cores shared with wrk and with other work.
	healthz := target{path: "/healthz", pid: srv.pid()}
	validate := target{path: "/v1/validate?touch=false", tokens: ds.poolFile, pid: srv.pid()}
	touched := target{path: "/v1/validate", tokens: ds.touchFile, pid: srv.pid()}

	// The second baseline: a bare net/http server in a process of its own
	// (bare.go), sent the same requests as validate.
	bare, err := startBare(ctx)
	if err != nil {
		return validateResult{}, err
	}
	defer bare.stop()
	bareT := target{path: validate.path, tokens: validate.tokens, base: bare.url, pid: bare.pid()}

	// Warm up every path (connections, caches, page cache), presenting
	// each token of the pool once.
	for _, t := range []target{healthz, validate, bareT} {
		if err := r.warmUp(ctx, srv.url, t); err != nil {
			return validateResult{}, err
		}
	}
	// Interleaved: /healthz, validate, bare; bare, validate, /healthz; ...
	peakBefore := scrapeMetrics(srv.url)
	runs, ops, secs, rates, err := r.peakRuns(ctx, srv.url, healthz, validate, bareT)
	if err != nil {
		return validateResult{}, err
	}
	peakSrv := serverCounts(peakBefore, scrapeMetrics(srv.url))
	hz, va, bw := runs[0], runs[1], runs[2]
	pr, prBare := pairOf(ops, secs, rates, 0, 1), pairOf(ops, secs, rates, 2, 1)
	res := validateResult{validatePeak: va.rps(), healthzPeak: hz.rps(), barePeak: bw.rps()}
	f := ratioFigure("validate_throughput"+suffix, fmt.Sprintf("validate throughput (touch=false), %s sessions", size),
		"req/s", va.rps(), hz.rps(), "/healthz", 0.8)
	f.Note = fmt.Sprintf("p50 %.2f / p99 %.2f ms; /healthz p50 %.2f / p99 %.2f ms", ms(va.P50), ms(va.P99), ms(hz.P50), ms(hz.P99))
	f.Note += fmt.Sprintf("; server CPU per request: validate %.1f µs, /healthz %.1f µs", va.serverCPUPerRequest(), hz.serverCPUPerRequest())
	f.Note += "; " + peakSrv.note()
	d0 := map[string]any{"validate": va.detail(), "healthz": hz.detail(), "token_pool": ds.poolSize, "server_during_runs": peakSrv.detail(),
		"wrk": fmt.Sprintf("-t%d -c%d", r.s.threads, r.s.conns)}
	if suffix == "" && r.catchUp != nil {
		d0["server_catch_up"] = r.catchUp
	}
	r.add(withDetail(withDetail(f, pr.detail()), d0))
	f = ratioFigure("validate_vs_bare"+suffix, fmt.Sprintf("validate vs bare net/http (separate process), %s sessions", size),
		"req/s", va.rps(), bw.rps(), "bare net/http", 0.8)
	f.Note = fmt.Sprintf("bare p50 %.2f / p99 %.2f ms, CPU %.1f µs per request (validate %.1f)", ms(bw.P50), ms(bw.P99), bw.serverCPUPerRequest(), va.serverCPUPerRequest())
	r.add(withDetail(withDetail(f, prBare.detail()), map[string]any{"validate": va.detail(), "bare": bw.detail(),
		"bare_body_bytes": len(bareBody), "token_pool": ds.poolSize, "wrk": fmt.Sprintf("-t%d -c%d", r.s.threads, r.s.conns)}))
	bare.stop()
	if r.prof != "" {
		err := r.profileWhile(ctx, addrFile, "cpu-validate"+suffix+".pprof", int(r.s.peakDur/time.Second), func() error {
			_, err := r.runWrk(ctx, srv.url, validate, r.s.peakDur)
			return err
		})
		if err != nil {
			return res, err
		}
	}

	// Latency at half of the validate peak, open loop.
	tokens, err := readLines(ds.poolFile)
	if err != nil {
		return res, err
	}
	rate := va.rps() / 2
	// The goal is relative (issue 13: ≤ 1.5× the p99 of /healthz at the
	// same rate, same machine, same moment), so /healthz is measured in
	// quick mode too, in slices taken in turn with validate's.
	var ol, hol openResult
	var slice time.Duration
	olBefore := scrapeMetrics(srv.url)
	err = r.traceWhile(ctx, addrFile, "trace-openloop"+suffix+".out", int(2*r.s.openDur/time.Second), func() error {
		both, sl, err := openLoopInterleaved(ctx, []string{srv.url + "/v1/validate?touch=false", srv.url + "/healthz"}, tokens, rate, r.s.openDur)
		slice = sl
		if err == nil {
			ol, hol = both[0], both[1]
		}
		return err
	})
	if err != nil {
		return res, err
	}
	// Both ran in turn: the collections are counted over the whole run.
	olSrv := serverCounts(olBefore, scrapeMetrics(srv.url))
	f = costFigure("validate_p99_half_peak"+suffix, fmt.Sprintf("validate p99 at half peak (%.0f req/s, open loop), %s sessions", rate, size),
		"ms", ol.q(ol.lat, 99), hol.q(hol.lat, 99), "/healthz p99 at the same rate", 1.5)
	d := ol.detail()
	d["healthz_same_rate"] = hol.detail()
	d["server_during_runs"] = olSrv.detail()
	f.Note = fmt.Sprintf("p50 %.2f, p99.9 %.2f ms; /healthz at the same rate: p50 %.2f, p99 %.2f ms; in %s slices taken in turn; during both: %s",
		ol.q(ol.lat, 50), ol.q(ol.lat, 99.9), hol.q(hol.lat, 50), hol.q(hol.lat, 99), slice.String(), olSrv.note())
	r.add(withDetail(f, d))
	if !touch {
		return res, nil
	}

	// Touched: the first validate of each session in the touch pool queues
	// a session_used event (sessions were last used two hours ago, the
	// granularity is one hour); later ones find it recorded.
	res.hwmBeforeTouch, _, _ = procStatus(srv.pid())
	before := scrapeMetrics(srv.url)
	var tw wrkResult
	err = r.profileWhile(ctx, addrFile, "cpu-touched"+suffix+".pprof", int(r.s.touchDur/time.Second)+5, func() error {
		var err error
		tw, err = r.runWrk(ctx, srv.url, touched, r.s.touchDur)
		return err
	})
	if err != nil {
		return res, err
	}
	after := scrapeMetrics(srv.url)
	// Let the recorder append what it queued and the projection apply it,
	// so the next measurement does not pay for this one.
	applyStart := time.Now()
	for {
		m := scrapeMetrics(srv.url)
		done := m["ledger_uses_appended_total"] + m["ledger_uses_failed_total"]
		if done >= m["ledger_uses_queued_total"] || time.Since(applyStart) > 3*time.Minute {
			break
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	appendedIn := time.Since(applyStart)
	if err := srv.waitReady(ctx, 3*time.Minute); err != nil {
		return res, err
	}
	f = ratioFigure("validate_touched"+suffix, fmt.Sprintf("validate throughput (touched, %s sessions due a use), %s sessions", human(r.s.touchPool), size),
		"req/s", tw.rps(), hz.rps(), "/healthz", 0.8)
	// The recorder paces itself (--use-spread): how much of the recording
	// fell inside the run is part of what the figure means.
	// The server's CPU per request is a steadier figure than the ratio,
	// which sets one short run against a /healthz rate taken earlier.
	cpuPerReq := tw.serverCPUPerRequest()
	f.Note = fmt.Sprintf("p50 %.2f / p99 %.2f ms; server CPU %.1f µs per request, the recording during the run included; %.0f of %.0f uses appended during the run, the rest within %.1f s after it",
		ms(tw.P50), ms(tw.P99), cpuPerReq, after["ledger_uses_appended_total"]-before["ledger_uses_appended_total"],
		after["ledger_uses_queued_total"]-before["ledger_uses_queued_total"], appendedIn.Seconds())
	touchSrv := serverCounts(before, after)
	f.Note += "; " + touchSrv.note()
	td := tw.detail()
	td["server_during_run"] = touchSrv.detail()
	for _, m := range []string{"ledger_uses_queued_total", "ledger_uses_dropped_total", "ledger_uses_appended_total"} {
		td[strings.TrimPrefix(m, "ledger_")+"_during_run"] = after[m] - before[m]
	}
	td["uses_appended_after_run_s"] = appendedIn.Seconds()
	td["projection_settle_s"] = time.Since(applyStart).Seconds()
	r.add(withDetail(f, td))
	return res, nil
}

// scrapeMetrics reads the samples of /metrics, by series.
func scrapeMetrics(base string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		// A labelled series is kept under its name with its labels, as
		// the exposition writes it: ledger_x{route="..."}.
		name, val, ok := cutSeries(line)
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// cutSeries splits an exposition line into its series (name and labels,
// which may hold spaces) and its value.
func cutSeries(line string) (series, value string, ok bool) {
	if end := strings.LastIndexByte(line, '}'); end >= 0 {
		return line[:end+1], strings.TrimSpace(line[end+1:]), true
	}
	return strings.Cut(line, " ")
}

func ms(us int64) float64 { return float64(us) / 1000 }

// serverWork is what the server did between two scrapes of /metrics: the
// validates it answered, how many of them read Pebble because the session
// cache did not hold the session, and its garbage collections.
type serverWork struct {
	validates, misses, gcs int64
	gcPause                float64 // seconds, stop-the-world pauses
}

func serverCounts(before, after map[string]float64) serverWork {
	diff := func(k string) float64 { return after[k] - before[k] }
	var v float64
	for k := range after {
		if strings.HasPrefix(k, `ledger_http_requests_total{`) && strings.Contains(k, `route="GET /v1/validate"`) {
			v += diff(k)
		}
	}
	return serverWork{validates: int64(v), misses: int64(diff("ledger_session_cache_misses_total")),
		gcs: int64(diff("go_gc_duration_seconds_count")), gcPause: diff("go_gc_duration_seconds_sum")}
}

func (w serverWork) note() string {
	return fmt.Sprintf("%d of %d validates read Pebble (session cache misses), %d collections", w.misses, w.validates, w.gcs)
}

func (w serverWork) detail() map[string]any {
	return map[string]any{"validates": w.validates, "session_cache_misses": w.misses, "gc_cycles": w.gcs, "gc_pause_s": w.gcPause}
}
