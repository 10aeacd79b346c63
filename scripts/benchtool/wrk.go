package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// luaScript drives wrk. Arguments after "--": path, token file ("" for
// none), thread count, and where in the pool the walk starts. Each thread
// loads the token pool and walks it from its own offset, one token per
// request, so every token in the pool is presented; done() prints the
// figures as one JSON line. Every request is formatted once, in init (as
// wrk does for a script without request()), not on each call: wrk shares
// the two cores with the server, and formatting a request with its
// Authorization header in Lua cost wrk about 3 µs more per validate than
// per /healthz (about 13 against 10 µs of wrk CPU per request, 100k set),
// CPU the server then did not have, so validate's rate against /healthz's
// measured the client too. The bytes sent are the same.
const luaScript = `
local tokens = {}
local requests = {}
local plain = nil
local idx = 0
local path = "/healthz"
local nthreads = 1
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  path = args[1] or "/healthz"
  nthreads = tonumber(args[3]) or 1
  if args[2] and args[2] ~= "" then
    for line in io.lines(args[2]) do
      if #line > 0 then tokens[#tokens + 1] = line end
    end
  end
  for i, t in ipairs(tokens) do
    requests[i] = wrk.format("GET", path, {["Authorization"] = "Bearer " .. t})
  end
  plain = wrk.format("GET", path)
  if #tokens > 0 then
    idx = (math.floor(#tokens / nthreads * (tid or 0)) + (tonumber(args[4]) or 0)) % #tokens
  end
end

function request()
  if #requests == 0 then
    return plain
  end
  idx = idx % #requests + 1
  return requests[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
`

func writeLua(dir string) (string, error) {
	p := filepath.Join(dir, "bench.lua")
	return p, os.WriteFile(p, []byte(luaScript), 0o644)
}

// wrkResult is one wrk run; latencies in microseconds.
type wrkResult struct {
	Requests   int64   `json:"requests"`
	DurationUS int64   `json:"duration_us"`
	P50        int64   `json:"p50_us"`
	P90        int64   `json:"p90_us"`
	P99        int64   `json:"p99_us"`
	Max        int64   `json:"max_us"`
	Mean       float64 `json:"mean_us"`
	ErrConnect int64   `json:"err_connect"`
	ErrRead    int64   `json:"err_read"`
	ErrWrite   int64   `json:"err_write"`
	ErrStatus  int64   `json:"err_status"`
	ErrTimeout int64   `json:"err_timeout"`

	// ServerCPU is the CPU time (user and system, seconds) of the
	// target's process (target.pid) during the run; 0 without a pid.
	ServerCPU float64 `json:"-"`
}

// serverCPUPerRequest is the target's process's CPU per request answered,
// in µs (0 if not measured).
func (w wrkResult) serverCPUPerRequest() float64 {
	if w.Requests == 0 {
		return 0
	}
	return w.ServerCPU / float64(w.Requests) * 1e6
}

func (w wrkResult) rps() float64 {
	if w.DurationUS == 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

func (w wrkResult) errors() int64 {
	return w.ErrConnect + w.ErrRead + w.ErrWrite + w.ErrStatus + w.ErrTimeout
}

// merge adds another run of the same target: throughput over both, and the
// worse of the two percentiles.
func (w wrkResult) merge(o wrkResult) wrkResult {
	w.Mean = (w.Mean*float64(w.Requests) + o.Mean*float64(o.Requests)) / float64(max(w.Requests+o.Requests, 1))
	w.Requests += o.Requests
	w.DurationUS += o.DurationUS
	w.P50, w.P90, w.P99, w.Max = max(w.P50, o.P50), max(w.P90, o.P90), max(w.P99, o.P99), max(w.Max, o.Max)
	w.ErrConnect += o.ErrConnect
	w.ErrRead += o.ErrRead
	w.ErrWrite += o.ErrWrite
	w.ErrStatus += o.ErrStatus
	w.ErrTimeout += o.ErrTimeout
	w.ServerCPU += o.ServerCPU
	return w
}

func (w wrkResult) detail() map[string]any {
	d := map[string]any{
		"requests": w.Requests, "seconds": float64(w.DurationUS) / 1e6,
		"p50_ms": float64(w.P50) / 1000, "p90_ms": float64(w.P90) / 1000, "p99_ms": float64(w.P99) / 1000,
		"max_ms": float64(w.Max) / 1000, "errors": w.errors(),
	}
	if w.ServerCPU > 0 {
		d["server_cpu_us_per_request"] = w.serverCPUPerRequest()
	}
	return d
}

// target is one wrk load: a path and, for validate, a token pool; base,
// if set, is the server to load instead of the one runWrk is given (the
// bare net/http baseline); pid, if set, is the process that serves it,
// whose CPU during each run is counted (wrkResult.ServerCPU).
type target struct {
	path   string
	tokens string
	base   string
	pid    int
}

// runWrk runs wrk for whole seconds against base+t.path. A token pool is
// walked on from where the last run against the same server and pool
// stopped: the peak runs are slices of a second, and each starting over
// at the first token presented only the first 40k or so of a 100k pool
// (all of the 10k one), so the 1M set's cache held only those and the
// open-loop run that followed, which walks the whole pool, found the rest
// cold.
func (r *runner) runWrk(ctx context.Context, base string, t target, dur time.Duration) (wrkResult, error) {
	secs := max(1, int(dur.Round(time.Second)/time.Second))
	if t.base != "" {
		base = t.base
	}
	walk := r.walkKey(base, t)
	args := []string{
		"-t", strconv.Itoa(r.s.threads), "-c", strconv.Itoa(r.s.conns), "-d", strconv.Itoa(secs) + "s",
		"--timeout", "5s", "-s", r.lua, base + "/", "--", t.path, t.tokens, strconv.Itoa(r.s.threads),
		strconv.FormatInt(r.walked[walk], 10),
	}
	var cpu0 float64
	if t.pid != 0 {
		cpu0 = cpuSeconds(t.pid)
	}
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	var cpu float64
	if t.pid != 0 && cpu0 > 0 {
		// Either read failing (0) would make the figure the process's
		// whole lifetime, or negative: leave it unmeasured instead.
		cpu = max(0, cpuSeconds(t.pid)-cpu0)
	}
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", t.path, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if js, ok := strings.CutPrefix(line, "BENCHJSON "); ok {
			var res wrkResult
			if err := json.Unmarshal([]byte(js), &res); err != nil {
				return wrkResult{}, fmt.Errorf("wrk output %q: %w", js, err)
			}
			res.ServerCPU = cpu
			if t.tokens != "" {
				if r.walked == nil {
					r.walked = map[string]int64{}
				}
				// With more than one thread each walks from its own offset
				// and the pool is covered anyway; the sum keeps one
				// thread's walk exact.
				r.walked[walk] += res.Requests
			}
			if res.errors() > 0 {
				return res, fmt.Errorf("wrk %s: %d errors (non-2xx %d, timeouts %d)\n%s", t.path, res.errors(), res.ErrStatus, res.ErrTimeout, out)
			}
			return res, nil
		}
	}
	return wrkResult{}, fmt.Errorf("wrk %s: no result line in output:\n%s", t.path, out)
}

// warmUp runs wrk against t in runs of a second until every token of its
// pool has been presented once (one run for a path without tokens, ten at
// most): the server's caches then hold what the measured runs present, as
// they do at 10k after the first second. At 1M a second presented about
// 40k of the 100k pool, and the runs after it paid for the first reads of
// the rest, each in its turn.
func (r *runner) warmUp(ctx context.Context, base string, t target) error {
	for i := 0; i < 10; i++ {
		w, err := r.runWrk(ctx, base, t, time.Second)
		if err != nil {
			return err
		}
		if t.tokens == "" || w.Requests == 0 {
			return nil
		}
		if r.walked[r.walkKey(base, t)] >= int64(r.poolSize(t.tokens)) {
			return nil
		}
	}
	return nil
}

// poolSize is how many tokens a pool file holds (lines), remembered.
func (r *runner) poolSize(file string) int {
	if n, ok := r.pools[file]; ok {
		return n
	}
	lines, err := readLines(file)
	if err != nil {
		return 0
	}
	if r.pools == nil {
		r.pools = map[string]int{}
	}
	r.pools[file] = len(lines)
	return len(lines)
}

// walkKey names a walk over a token pool on one server.
func (r *runner) walkKey(base string, t target) string {
	if t.base != "" {
		base = t.base
	}
	return base + " " + t.tokens
}

// peakRuns measures targets at full load, interleaved in one-second slices
// (interleaveN), and returns each target's merged run and the per-round
// rates (in the order of ts) for pairOf.
func (r *runner) peakRuns(ctx context.Context, base string, ts ...target) (res []wrkResult, ops, secs []float64, rates [][]float64, err error) {
	res = make([]wrkResult, len(ts))
	seen := make([]bool, len(ts))
	fns := make([]func(time.Duration) (float64, time.Duration, error), len(ts))
	for i, t := range ts {
		fns[i] = func(d time.Duration) (float64, time.Duration, error) {
			w, err := r.runWrk(ctx, base, t, d)
			if err != nil {
				return 0, 0, err
			}
			if seen[i] {
				res[i] = res[i].merge(w)
			} else {
				res[i], seen[i] = w, true
			}
			return float64(w.Requests), time.Duration(w.DurationUS) * time.Microsecond, nil
		}
	}
	ops, secs, rates, err = interleaveN(r.s.peakDur, time.Second, fns...)
	return res, ops, secs, rates, err
}
