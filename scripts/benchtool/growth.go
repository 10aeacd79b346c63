package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The growth table (--only growth): how the cost of a ledger grows with
// the number of events in its stream. For each size, one after the other
// and each on a data set of its own that is deleted before the next (the
// largest take gigabytes):
//
//  1. seed that many events (seedDataset: users with perUser sessions
//     each, so 1 + perUser events a user plus the key's introduction);
//  2. wait out JetStream's 2-minute duplicate window over the seeded
//     messages (unless --no-dedupe-wait), so neither the rebuild nor the
//     server carries the seeding's message ids, which no production server
//     does;
//  3. `ledger rebuild`: its time, events/s and peak RSS;
//  4. the data dir's size on disk: the stream store (nats/) and the Pebble
//     projection (projection/), in bytes per event;
//  5. `ledger serve` on it: validate (touch=false) with wrk over the
//     sampled tokens, interleaved with /healthz, and the server's peak RSS.

// defaultGrowthSizes are the sizes --only growth runs without
// --growth-sizes; 10M is opt-in (it takes the better part of an hour).
const defaultGrowthSizes = "10k,100k,1m"

// growthPool is the most tokens sampled for validate at any size.
const growthPool = 100_000

// parseSizes reads a list such as "10k,100k,1m,10m" (k = 1,000, m =
// 1,000,000; plain numbers too).
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mult, f = 1_000, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "m"):
			mult, f = 1_000_000, strings.TrimSuffix(f, "m")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("size %q: want a positive number, optionally with k or m", f)
		}
		out = append(out, n*mult)
	}
	if len(out) == 0 {
		return nil, errors.New("no sizes")
	}
	return out, nil
}

// sessionsForEvents is how many sessions make about `events` events when
// every user has perUser sessions: each user is 1 + perUser events
// (user_registered, then one session_started per session), so the stream
// holds events/(1+perUser) users, perUser times as many sessions, and one
// more event, the signing key's introduction. 10k events → 8k sessions of
// 2k users, 10,001 events.
func sessionsForEvents(events, perUser int) int {
	return events / (1 + perUser) * perUser
}

// GrowthRow is one size of the growth table; sizes in bytes, times in
// seconds, memory in MiB.
type GrowthRow struct {
	Events   int `json:"events"`        // the size asked for
	Stream   int `json:"stream_events"` // events in the stream, the key's introduction included
	Sessions int `json:"sessions"`
	Users    int `json:"users"`

	SeedSeconds     float64 `json:"seed_s"`
	SeedRate        float64 `json:"seed_events_per_s"`
	SeedBenchHWMMiB float64 `json:"seed_bench_peak_rss_mib"` // this process (the seeder and its embedded NATS) while seeding
	DedupeWaitS     float64 `json:"dedupe_wait_s"`

	StreamBytes      int64   `json:"stream_bytes"`     // nats/ (apparent size)
	ProjectionBytes  int64   `json:"projection_bytes"` // projection/
	TotalBytes       int64   `json:"total_bytes"`      // both
	StreamAlloc      int64   `json:"stream_bytes_allocated"`
	ProjectionAlloc  int64   `json:"projection_bytes_allocated"`
	StreamPerEvent   float64 `json:"stream_bytes_per_event"`
	ProjPerEvent     float64 `json:"projection_bytes_per_event"`
	TotalPerEvent    float64 `json:"total_bytes_per_event"`
	ProjectionFiles  int     `json:"projection_files"`
	StreamFiles      int     `json:"stream_files"`
	RebuildSeconds   float64 `json:"rebuild_s"`      // as its summary line says
	RebuildWallS     float64 `json:"rebuild_wall_s"` // the whole command
	RebuildRate      float64 `json:"rebuild_events_per_s"`
	RebuildHWMMiB    float64 `json:"rebuild_peak_rss_mib"`
	ServeStartupS    float64 `json:"serve_startup_s"`
	TokenPool        int     `json:"token_pool"`
	ValidateRPS      float64 `json:"validate_rps"`
	HealthzRPS       float64 `json:"healthz_rps"`
	ValidateRel      float64 `json:"validate_vs_healthz"`
	ValidateP50ms    float64 `json:"validate_p50_ms"`
	ValidateP99ms    float64 `json:"validate_p99_ms"`
	Validate         any     `json:"validate_detail"`
	Healthz          any     `json:"healthz_detail"`
	ServerStartMiB   float64 `json:"server_peak_rss_after_start_mib"`
	ServerHWMMiB     float64 `json:"server_peak_rss_mib"`
	WallSeconds      float64 `json:"wall_s"` // the whole size, seeding to deletion
	LoadAvgStart     string  `json:"loadavg_start"`
	LoadAvgEnd       string  `json:"loadavg_end"`
	StartedAt        string  `json:"started_at"`
	DedupeWindowUsed bool    `json:"dedupe_window_rebuilt"` // rebuild or server started within the window
}

// growthPhase runs the growth table over r.s.growthSizes, calling flush
// after every size (so a long run leaves its finished sizes behind).
func (r *runner) growthPhase(ctx context.Context, pwHash string, flush func()) error {
	r.note("each size is users with %d sessions each (%d events a user: user_registered, then session_started per session) plus the signing key's introduction, so sessions = events × %d/%d; validate rotates over a uniform sample of min(%s, sessions) tokens",
		r.s.perUser, 1+r.s.perUser, r.s.perUser, 1+r.s.perUser, human(growthPool))
	r.note("disk: apparent size of nats/ (the JetStream file store) and projection/ (Pebble) after the rebuild, per event in the stream; the data set is deleted before the next size")
	if r.s.dedupeWait {
		r.note("after seeding, each size waits out JetStream's 2-minute duplicate window before the rebuild, so neither the rebuild nor the server holds the seeded message ids")
	} else {
		r.note("--no-dedupe-wait: the rebuild (and the server, if it started within 2 minutes of the seeding) held the seeded message ids of JetStream's duplicate window")
	}
	for _, size := range r.s.growthSizes {
		row, err := r.growthSize(ctx, size, pwHash)
		if err != nil {
			return fmt.Errorf("growth %s: %w", human(size), err)
		}
		r.growth = append(r.growth, row)
		flush()
	}
	return nil
}

func (r *runner) growthSize(ctx context.Context, size int, pwHash string) (GrowthRow, error) {
	begin := time.Now()
	row := GrowthRow{Events: size, LoadAvgStart: loadAvg(), StartedAt: begin.UTC().Format(time.RFC3339)}
	sessions := sessionsForEvents(size, r.s.perUser)
	pool := min(growthPool, sessions)
	dir := filepath.Join(r.work, "growth-"+human(size))
	logf("growth %s: seeding %d sessions", human(size), sessions)
	resetPeakRSS()
	ds, err := seedDataset(ctx, dir, sessions, r.s.perUser, pool, 0, pwHash)
	if err != nil {
		return row, fmt.Errorf("seed: %w", err)
	}
	if !r.keep {
		defer func() {
			if err := os.RemoveAll(dir); err != nil {
				logf("growth: remove %s: %v", dir, err)
			}
		}()
	}
	row.SeedSeconds = ds.seededAt.Sub(begin).Seconds()
	row.Stream, row.Sessions, row.Users, row.TokenPool = ds.events, ds.sessions, ds.users, ds.poolSize
	row.SeedRate = float64(ds.events) / row.SeedSeconds
	if hwm, _, err := procStatus(os.Getpid()); err == nil {
		row.SeedBenchHWMMiB = float64(hwm) / mib
	}

	inWindow, waited, err := r.pastDedupeWindow(ctx, ds, "growth "+human(size)+": ")
	if err != nil {
		return row, err
	}
	row.DedupeWaitS, row.DedupeWindowUsed = waited.Seconds(), inWindow

	rb, err := r.ledgerRebuild(ctx, ds, nil, nil)
	if err != nil {
		return row, err
	}
	row.RebuildSeconds, row.RebuildWallS, row.RebuildRate = rb.took.Seconds(), rb.wall.Seconds(), rb.rate
	row.RebuildHWMMiB = float64(rb.hwm) / mib

	stream, err := dirUsage(filepath.Join(dir, "nats"))
	if err != nil {
		return row, err
	}
	proj, err := dirUsage(filepath.Join(dir, "projection"))
	if err != nil {
		return row, err
	}
	row.StreamBytes, row.StreamAlloc, row.StreamFiles = stream.bytes, stream.alloc, stream.files
	row.ProjectionBytes, row.ProjectionAlloc, row.ProjectionFiles = proj.bytes, proj.alloc, proj.files
	row.TotalBytes = stream.bytes + proj.bytes
	row.StreamPerEvent = float64(stream.bytes) / float64(ds.events)
	row.ProjPerEvent = float64(proj.bytes) / float64(ds.events)
	row.TotalPerEvent = float64(row.TotalBytes) / float64(ds.events)
	logf("growth %s: on disk %s stream + %s projection = %.0f bytes/event", human(size), humanBytes(stream.bytes), humanBytes(proj.bytes), row.TotalPerEvent)

	if err := r.growthServe(ctx, ds, &row); err != nil {
		return row, err
	}
	row.LoadAvgEnd = loadAvg()
	row.WallSeconds = time.Since(begin).Seconds()
	logf("growth %s: done in %s", human(size), time.Since(begin).Round(time.Second))
	return row, nil
}

// growthServe serves the rebuilt data set: validate (touch=false) against
// /healthz, interleaved, and the server's peak RSS.
func (r *runner) growthServe(ctx context.Context, ds *dataset, row *GrowthRow) error {
	srv, err := startServer(ctx, r.ledger, ds.dir, filepath.Join(r.work, "serve-"+filepath.Base(ds.dir)+".log"), nil)
	if err != nil {
		return err
	}
	defer srv.stop()
	row.ServeStartupS = srv.startup.Seconds()
	if hwm, _, err := procStatus(srv.pid()); err == nil {
		row.ServerStartMiB = float64(hwm) / mib
	}
	logf("growth %s: serving at %s (started in %s)", human(row.Events), srv.url, srv.startup.Round(time.Millisecond))
	healthz := target{path: "/healthz"}
	validate := target{path: "/v1/validate?touch=false", tokens: ds.poolFile}
	for _, t := range []target{healthz, validate} {
		if err := r.warmUp(ctx, srv.url, t); err != nil {
			return err
		}
	}
	runs, ops, secs, rates, err := r.peakRuns(ctx, srv.url, healthz, validate)
	if err != nil {
		return err
	}
	hz, va := runs[0], runs[1]
	pr := pairOf(ops, secs, rates, 0, 1)
	row.ValidateRPS, row.HealthzRPS = va.rps(), hz.rps()
	row.ValidateRel = va.rps() / hz.rps()
	row.ValidateP50ms, row.ValidateP99ms = ms(va.P50), ms(va.P99)
	vd := va.detail()
	for k, v := range pr.detail() {
		vd[k] = v
	}
	row.Validate, row.Healthz = vd, hz.detail()
	hwm, _, err := procStatus(srv.pid())
	if err != nil {
		return err
	}
	row.ServerHWMMiB = float64(hwm) / mib
	logf("growth %s: validate %.0f req/s (%.2f× /healthz), server peak RSS %.0f MiB", human(row.Events), row.ValidateRPS, row.ValidateRel, row.ServerHWMMiB)
	return srv.checkNoRejections()
}

// usage is what a directory tree holds.
type usage struct {
	bytes int64 // apparent size of its regular files
	alloc int64 // blocks allocated to them
	files int
}

func dirUsage(dir string) (usage, error) {
	var u usage
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		u.bytes += info.Size()
		u.files++
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			u.alloc += st.Blocks * 512
		}
		return nil
	})
	return u, err
}

// resetPeakRSS resets this process's VmHWM to its current RSS (Linux:
// writing 5 to clear_refs), so the next read is the peak since now.
func resetPeakRSS() {
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// humanDuration is a duration for the table: 42 s, 3.5 min, 1.2 h.
func humanDuration(s float64) string {
	switch {
	case s >= 3600:
		return fmt.Sprintf("%.1f h", s/3600)
	case s >= 100:
		return fmt.Sprintf("%.1f min", s/60)
	case s >= 10:
		return fmt.Sprintf("%.0f s", s)
	default:
		return fmt.Sprintf("%.1f s", s)
	}
}

// renderGrowth is the growth table in Markdown.
func renderGrowth(rows []GrowthRow) string {
	var b strings.Builder
	fmt.Fprintln(&b, "| events | sessions (users) | seeding | disk per event: stream + projection = total | on disk | rebuild | rebuild peak RSS | validate (touch=false) | server peak RSS | wall time |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|")
	for _, g := range rows {
		fmt.Fprintf(&b, "| %s (%d) | %s (%s) | %s (%s events/s) | %.0f + %.0f = %.0f B | %s | %s (%s events/s) | %.0f MiB | %s req/s, %.2f× /healthz (p99 %.2f ms) | %.0f MiB | %s |\n",
			human(g.Events), g.Stream, human(g.Sessions), human(g.Users),
			humanDuration(g.SeedSeconds), fmtNum(g.SeedRate),
			g.StreamPerEvent, g.ProjPerEvent, g.TotalPerEvent, humanBytes(g.TotalBytes),
			humanDuration(g.RebuildSeconds), fmtNum(g.RebuildRate), g.RebuildHWMMiB,
			fmtNum(g.ValidateRPS), g.ValidateRel, g.ValidateP99ms, g.ServerHWMMiB, humanDuration(g.WallSeconds))
	}
	return b.String()
}
