// Command benchtool measures the ledger against baselines taken in the same
// run on the same machine and reports ratios. It is run by scripts/bench;
// docs/performance.md describes every figure.
//
// What it does, in order:
//
//  1. builds the ledger binary;
//  2. seeds a large data set (1M live sessions, 100k with --quick) straight
//     into the event store, signed with a new key in the data dir as a new
//     ledger would be, and runs `ledger rebuild` on it (every event checked:
//     hash, chain, MAC) against a raw ordered-consumer read; then
//     eventstore.Verify (the audit's Ed25519 check, on all cores) against
//     the same raw read;
//  3. seeds a small one (10k); times the per-event checks against decoding
//     alone, and the live apply (one record per ApplyBatch) against
//     catch-up batches, in this process on the small set's events;
//  4. serves the small set: wrk on /v1/validate vs /healthz and vs a bare
//     net/http server in a process of its own (bare.go), an open-loop
//     run at half the validate peak for latency, a touched run, then logins
//     over HTTP vs raw argon2id;
//  5. appends through eventstore.Store vs raw JetStream publishes;
//  6. serves the large one: the same validate figures and the server's peak
//     RSS, and compares validate at both sizes;
//  7. under attack: two scenarios, each on a fresh server on the small set
//     trusting 127.0.0.1 as a proxy: a password-guessing attack (wrong
//     passwords for one account, random unknown emails) from one client
//     address, then the same with every request from a random address,
//     while validates run at a fixed rate and a legitimate client logs in
//     to another account (attack.go). --only attack runs this phase alone,
//     after seeding the small set.
//
// --only validate runs steps 2 (seeding, the duplicate window, `ledger
// rebuild`, without its figure or the raw read) and 6 alone: the large
// set's validate rows and its server's peak RSS, in about seven minutes at
// 1M (validatePhase).
//
// --only growth runs none of that: for each of --growth-sizes (events),
// it seeds a data set, rebuilds it, measures its size on disk, serves it
// and measures validate, then deletes it (growth.go).
//
// Everything listens on 127.0.0.1 only; NATS is embedded and not exposed,
// and admits only the data dir's nkey identities, as `ledger serve` does.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// settings are the sizes and durations of one run.
type settings struct {
	quick      bool
	small      int           // sessions in the small data set
	large      int           // sessions in the large data set
	perUser    int           // sessions per seeded user
	pool       int           // distinct tokens wrk rotates over (large set)
	peakDur    time.Duration // wrk peak run per side, in interleaved 1 s slices
	openDur    time.Duration // open-loop latency run
	touchDur   time.Duration // touched validate run
	touchPool  int           // distinct sessions the touched run presents (each records one use)
	touchLarge bool          // run the touched variant on the large set too
	appendDur  time.Duration // each append variant, per side
	loginDur   time.Duration // login and argon2id runs, per side
	conns      int           // wrk connections
	threads    int           // wrk threads
	dedupeWait bool          // wait out JetStream's duplicate window before serving the large set
	applyPairs int           // live-apply chunk pairs (each side applies applyChunk uses per pair)
	// The attack phase.
	attackDur     time.Duration // how long the attack lasts, per scenario
	attackPeakDur time.Duration // the validate peak the phase's rate is half of
	attackWorkers int           // attacking connections per group (one account, unknown emails)
	attackFlags   []string      // extra `ledger serve` flags for the attacked servers
	only          string        // run only this phase ("attack"); "" for all
	ledgerBin     string        // --only login, validate or attack: a prebuilt binary, "" to build
	largeEnv      []string      // extra environment of the large data set's server (--large-server-env)
	reuse         bool          // --only validate: serve the large set a --keep run left in the work dir
	growthSizes   []int         // --only growth: events per data set
}

func defaults(quick bool) settings {
	if quick {
		return settings{
			quick: true, small: 10_000, large: 100_000, perUser: 4, pool: 50_000,
			peakDur: 2 * time.Second, openDur: 2 * time.Second, touchDur: time.Second, touchPool: 1000, touchLarge: true,
			appendDur: time.Second, loginDur: 2 * time.Second,
			conns: 32, threads: 1, applyPairs: 4,
			attackDur: 10 * time.Second, attackPeakDur: 2 * time.Second, attackWorkers: 200,
		}
	}
	return settings{
		small: 10_000, large: 1_000_000, perUser: 4, pool: 100_000,
		peakDur: 6 * time.Second, openDur: 6 * time.Second, touchDur: 3 * time.Second, touchPool: 10_000,
		touchLarge: true, appendDur: 4 * time.Second, loginDur: 6 * time.Second,
		conns: 32, threads: 1, dedupeWait: true, applyPairs: 8,
		attackDur: 30 * time.Second, attackPeakDur: 3 * time.Second, attackWorkers: 200,
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == attackClientArg {
		os.Exit(attackClientMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == bareHTTPArg {
		os.Exit(bareHTTPMain(os.Args[2:]))
	}
	quick := flag.Bool("quick", false, "smaller data set (100k) and shorter runs: one to two minutes")
	out := flag.String("out", "bench-results.json", "where to write the figures as JSON (relative paths are taken from the directory scripts/bench was started in)")
	large := flag.Int("large", 0, "sessions in the large data set (default 1000000, 100000 with --quick)")
	profile := flag.String("profile", "", "save CPU and heap profiles to this directory (builds the ledger with a pprof listener through -overlay; figures of a profiled run are a little lower)")
	keep := flag.Bool("keep", false, "keep the work directory (data sets, logs, token files)")
	workDir := flag.String("work-dir", "", "work directory (default: a new temporary directory)")
	noWait := flag.Bool("no-dedupe-wait", false, "do not wait out JetStream's 2-minute duplicate window before serving the large data set")
	only := flag.String("only", "", "run only this phase: login (seeds the small data set, then the login row over 10 s a side; about half a minute), attack (seeds the small data set, then the attack phase's two scenarios; about three minutes, one and a half with --quick), audit (seeds the large data set, rebuilds its projection, then audit verify and the audit point query), validate (seeds the large data set, rebuilds its projection, then serves it: its validate rows and the server's peak RSS), or growth (the growth table: for each of --growth-sizes, seed, rebuild, disk use, serve and validate, then delete)")
	largeEnv := flag.String("large-server-env", "", "extra `environment` of the large data set's server, space-separated NAME=VALUE (e.g. \"GOGC=150 GODEBUG=gctrace=1\"; its stderr is the work dir's serve-large.log); the figures then describe that setting, and a note says so")
	growthSizes := flag.String("growth-sizes", defaultGrowthSizes, "with --only growth: the sizes, in events, comma-separated (k = 1,000, m = 1,000,000); 10m takes the better part of an hour")
	reuse := flag.Bool("reuse", false, "with --only validate and --work-dir: serve the large data set (projection built) that an earlier --keep run left in the work dir instead of seeding one, about a minute and a half in all; its touched row then presents sessions that run may have used already, and its server carries that run's appends")
	attackOnly := flag.Bool("attack-only", false, "the same as --only attack")
	attackDur := flag.Duration("attack-duration", 0, "how long each scenario of the attack phase attacks (default 30s, 10s with --quick; at least 5s)")
	ledgerBin := flag.String("ledger", "", "with --only login, validate or attack: run this ledger binary instead of building one (to compare two builds, or a build under other settings through a wrapper script that execs it, in one lock window; with --profile, build it with the bench's pprof overlay)")
	attackFlags := flag.String("attack-server-flags", "", "extra `flags` for the attacked ledger serve, space-separated (e.g. \"--hash-concurrency 1\"); the figures then describe that setting, and a note says so")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: scripts/bench [--quick] [--only login|attack|audit|validate|growth | --attack-only] [--ledger BIN] [--large-server-env ENV] [--growth-sizes 10k,100k,1m,10m] [--reuse] [--attack-duration D] [--attack-server-flags FLAGS] [--out FILE] [--profile DIR] [--keep] [--work-dir DIR] [--large N] [--no-dedupe-wait]")
		fmt.Fprintln(flag.CommandLine.Output(), "\nMeasures the ledger against baselines taken in the same run; see docs/performance.md.")
		flag.PrintDefaults()
	}
	flag.Parse()
	// scripts/bench changes to the repository root; paths the user typed
	// are relative to where they typed them. The default --out stays at
	// the repository root (.gitignore has it).
	userDir := os.Getenv("LEDGER_BENCH_CWD")
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, p := range map[string]*string{"out": out, "work-dir": workDir, "profile": profile} {
		if given[name] && userDir != "" && *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(userDir, *p)
		}
	}

	s := defaults(*quick)
	if *large > 0 {
		s.large = *large
	}
	if *noWait {
		s.dedupeWait = false
	}
	if *attackOnly {
		*only = "attack"
	}
	switch *only {
	case "", "attack", "audit", "validate", "growth", "login":
		s.only = *only
	default:
		fmt.Fprintf(os.Stderr, "bench: --only %q: the phases that run alone are login, attack, audit, validate and growth\n", *only)
		os.Exit(2)
	}
	if s.only == "growth" {
		sizes, err := parseSizes(*growthSizes)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: --growth-sizes:", err)
			os.Exit(2)
		}
		s.growthSizes = sizes
	} else if given["growth-sizes"] {
		fmt.Fprintln(os.Stderr, "bench: --growth-sizes goes with --only growth")
		os.Exit(2)
	}
	s.attackFlags = strings.Fields(*attackFlags)
	if s.only == "login" {
		s.loginDur = 10 * time.Second
	}
	if *ledgerBin != "" {
		if s.only != "login" && s.only != "validate" && s.only != "attack" {
			fmt.Fprintln(os.Stderr, "bench: --ledger goes with --only login, validate or attack")
			os.Exit(2)
		}
		abs, err := filepath.Abs(filepath.Join(userDir, *ledgerBin))
		if filepath.IsAbs(*ledgerBin) || userDir == "" {
			abs, err = filepath.Abs(*ledgerBin)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: --ledger:", err)
			os.Exit(2)
		}
		s.ledgerBin = abs
	}
	if *reuse && (*only != "validate" || *workDir == "") {
		fmt.Fprintln(os.Stderr, "bench: --reuse goes with --only validate and --work-dir")
		os.Exit(2)
	}
	s.reuse = *reuse
	s.largeEnv = strings.Fields(*largeEnv)
	for _, kv := range s.largeEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			fmt.Fprintf(os.Stderr, "bench: --large-server-env: %q is not NAME=VALUE\n", kv)
			os.Exit(2)
		}
	}
	if *attackDur != 0 {
		if *attackDur < 5*time.Second {
			fmt.Fprintln(os.Stderr, "bench: --attack-duration must be at least 5s")
			os.Exit(2)
		}
		s.attackDur = *attackDur
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, s, *out, *workDir, *keep, *profile); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Report is what bench-results.json holds.
type Report struct {
	Mode      string    `json:"mode"`
	Command   string    `json:"command"`
	StartedAt time.Time `json:"started_at"`
	Seconds   float64   `json:"seconds"`
	Machine   Machine   `json:"machine"`
	LoadAvg   [2]string `json:"loadavg_start_end"`
	Settings  any       `json:"settings"`
	Figures   []Figure  `json:"figures"`
	// Growth is the growth table (--only growth), one row per size.
	Growth []GrowthRow `json:"growth,omitempty"`
	Notes  []string    `json:"notes,omitempty"`
}

// Figure is one measured value, the baseline it is compared with, and the
// goal on their ratio (or on the value itself).
type Figure struct {
	ID           string         `json:"id"`
	Name         string         `json:"name"`
	Value        float64        `json:"value"`
	Unit         string         `json:"unit"`
	Baseline     float64        `json:"baseline,omitempty"`
	BaselineName string         `json:"baseline_name,omitempty"`
	Ratio        float64        `json:"ratio,omitempty"`
	Goal         string         `json:"goal,omitempty"`
	Met          *bool          `json:"met,omitempty"`
	Note         string         `json:"note,omitempty"` // shown next to the value in the table
	Detail       map[string]any `json:"detail,omitempty"`
}

// ratioFigure compares value with baseline: higher is better, goal is the
// minimum ratio (0: informational).
func ratioFigure(id, name, unit string, value, baseline float64, baselineName string, goal float64) Figure {
	f := Figure{ID: id, Name: name, Value: value, Unit: unit, Baseline: baseline, BaselineName: baselineName}
	if baseline > 0 {
		f.Ratio = value / baseline
	}
	if goal > 0 {
		f.Goal = fmt.Sprintf("≥ %.2g×", goal)
		met := f.Ratio >= goal
		f.Met = &met
	}
	return f
}

// maxFigure is a value with an upper bound (0: informational).
func maxFigure(id, name, unit string, value, limit float64) Figure {
	f := Figure{ID: id, Name: name, Value: value, Unit: unit}
	if limit > 0 {
		f.Goal = fmt.Sprintf("≤ %g %s", limit, unit)
		met := value <= limit
		f.Met = &met
	}
	return f
}

type runner struct {
	s       settings
	work    string
	ledger  string         // built binary
	lua     string         // wrk script
	prof    string         // profile directory, "" for none
	catchUp map[string]any // the small server's own catch-up from the stream
	// rebuildUS is µs per event of `ledger rebuild`, for the note of the
	// check cost (0 until measured).
	rebuildUS float64
	figures   []Figure
	growth    []GrowthRow
	notes     []string
	keep      bool // keep the data sets (--keep)
	// walked is how many requests wrk has sent per server and token pool,
	// so that the next run walks the pool on from there (runWrk).
	walked map[string]int64
	pools  map[string]int // tokens per pool file, for warmUp
}

func (r *runner) add(f Figure) {
	r.figures = append(r.figures, f)
	met := "-"
	if f.Met != nil {
		met = map[bool]string{true: "met", false: "MISSED"}[*f.Met]
	}
	if f.Baseline > 0 {
		logf("%s: %s %s vs %s %s = %.3f× (%s %s)", f.Name, fmtNum(f.Value), f.Unit, fmtNum(f.Baseline), f.Unit, f.Ratio, f.Goal, met)
	} else {
		logf("%s: %s %s (%s %s)", f.Name, fmtNum(f.Value), f.Unit, f.Goal, met)
	}
}

func (r *runner) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	r.notes = append(r.notes, n)
	logf("note: %s", n)
}

func run(ctx context.Context, s settings, outPath, workDir string, keep bool, profDir string) (err error) {
	started := time.Now()
	loadStart := loadAvg()
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk not found: run scripts/bench (it installs wrk) or apt-get install -y wrk")
	}
	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "ledger-bench-"); err != nil {
			return err
		}
		if !keep {
			defer os.RemoveAll(workDir)
		}
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		return err
	}
	if profDir != "" {
		if profDir, err = filepath.Abs(profDir); err != nil {
			return err
		}
	}
	r := &runner{s: s, work: workDir, prof: profDir, keep: keep}
	if s.only == "growth" {
		logf("work dir %s (mode %s, sizes %v events)", workDir, mode(s), s.growthSizes)
	} else if s.only == "" {
		logf("work dir %s (mode %s, large set %d sessions)", workDir, mode(s), s.large)
	} else {
		logf("work dir %s (mode %s)", workDir, mode(s))
	}

	if s.ledgerBin != "" {
		r.ledger = s.ledgerBin
		logf("ledger binary %s", r.ledger)
	} else {
		r.ledger = filepath.Join(workDir, "ledger")
		logf("building ledger")
		extra, err := r.buildArgs()
		if err != nil {
			return err
		}
		build := exec.CommandContext(ctx, "go", append(append([]string{"build"}, extra...), "-o", r.ledger, "./cmd/ledger")...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build ledger: %w", err)
		}
	}
	if r.lua, err = writeLua(workDir); err != nil {
		return err
	}
	pwHash, err := benchPasswordHash()
	if err != nil {
		return err
	}

	largePool := 0
	report := func() Report {
		settings := map[string]any{
			"small_sessions": s.small, "large_sessions": s.large, "sessions_per_user": s.perUser,
			"token_pool_large": largePool, "wrk_threads": s.threads, "wrk_connections": s.conns,
			"peak_run_s": s.peakDur.Seconds(), "open_loop_run_s": s.openDur.Seconds(),
			"append_run_s": s.appendDur.Seconds(), "login_run_s": s.loginDur.Seconds(),
			"touched_run_s": s.touchDur.Seconds(), "touched_pool": s.touchPool,
			"check_rounds": checkRounds, "apply_chunk": applyChunk, "apply_pairs": s.applyPairs,
			"gomaxprocs": runtime.GOMAXPROCS(0),
			"attack_s":   s.attackDur.Seconds(), "attack_connections_per_group": s.attackWorkers,
			"attack_peak_run_s": s.attackPeakDur.Seconds(), "attack_server_flags": strings.Join(s.attackFlags, " "), "only": s.only,
			"large_server_env": strings.Join(s.largeEnv, " "), "dedupe_wait": s.dedupeWait, "reuse": s.reuse,
		}
		if s.only == "growth" {
			settings = map[string]any{
				"growth_sizes_events": s.growthSizes, "sessions_per_user": s.perUser, "token_pool_max": growthPool,
				"wrk_threads": s.threads, "wrk_connections": s.conns, "peak_run_s": s.peakDur.Seconds(),
				"dedupe_wait": s.dedupeWait, "gomaxprocs": runtime.GOMAXPROCS(0), "only": s.only,
			}
		}
		return Report{
			Mode:      mode(s),
			Command:   commandLine(),
			StartedAt: started.UTC(),
			Seconds:   time.Since(started).Seconds(),
			Machine:   describeMachine(),
			LoadAvg:   [2]string{loadStart, loadAvg()},
			Settings:  settings,
			Figures:   orderFigures(r.figures),
			Growth:    r.growth,
			Notes:     r.notes,
		}
	}
	writeReport := func(rep Report) error {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(outPath, append(data, '\n'), 0o644)
	}
	if s.only == "growth" {
		// The JSON is written after every size, so that a long run
		// (10M) leaves what it finished if it is stopped.
		flush := func() {
			if err := writeReport(report()); err != nil {
				logf("write %s: %v", outPath, err)
			}
		}
		if err := r.growthPhase(ctx, pwHash, flush); err != nil {
			return err
		}
	} else if s.only == "attack" {
		small, err := seedDataset(ctx, filepath.Join(workDir, "small"), s.small, s.perUser, s.small, s.touchPool, pwHash)
		if err != nil {
			return fmt.Errorf("seed small: %w", err)
		}
		if err := r.attackBench(ctx, small); err != nil {
			return fmt.Errorf("under attack: %w", err)
		}
	} else if s.only == "login" {
		if err := r.loginOnly(ctx, pwHash); err != nil {
			return fmt.Errorf("login: %w", err)
		}
	} else if s.only == "audit" {
		large, err := seedDataset(ctx, filepath.Join(workDir, "large"), s.large, s.perUser, s.pool, s.touchPool, pwHash)
		if err != nil {
			return fmt.Errorf("seed large: %w", err)
		}
		if err := r.rebuildBench(ctx, large); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		if err := r.auditPhase(ctx, large); err != nil {
			return err
		}
	} else if s.only == "validate" {
		if largePool, err = r.validatePhase(ctx, pwHash); err != nil {
			return err
		}
	} else if largePool, err = r.allPhases(ctx, pwHash); err != nil {
		return err
	}
	if r.prof != "" {
		r.note("profiled run (--profile): the server had a pprof listener and was sampled during some runs")
	}

	rep := report()
	fmt.Print(renderTable(rep))
	if err := writeReport(rep); err != nil {
		return err
	}
	logf("wrote %s in %s", outPath, time.Since(started).Round(time.Second))
	return nil
}

// allPhases runs every phase in order (see the package comment), the
// attack last, and returns the size of the large set's token pool.
func (r *runner) allPhases(ctx context.Context, pwHash string) (int, error) {
	s, workDir := r.s, r.work
	// The large set first. `ledger rebuild` builds its projection (that is
	// the rebuild figure), once JetStream's duplicate window over the
	// seeded events has passed, so that the rebuild and later the large
	// server run as they would on a production stream (see
	// pastDedupeWindow).
	large, err := seedDataset(ctx, filepath.Join(workDir, "large"), s.large, s.perUser, s.pool, s.touchPool, pwHash)
	if err != nil {
		return 0, fmt.Errorf("seed large: %w", err)
	}
	if err := r.rebuildBench(ctx, large); err != nil {
		return 0, fmt.Errorf("rebuild: %w", err)
	}
	if err := r.auditPhase(ctx, large); err != nil {
		return 0, err
	}
	small, err := seedDataset(ctx, filepath.Join(workDir, "small"), s.small, s.perUser, s.small, s.touchPool, pwHash)
	if err != nil {
		return 0, fmt.Errorf("seed small: %w", err)
	}
	if err := r.checkBench(ctx, small); err != nil {
		return 0, fmt.Errorf("checks: %w", err)
	}
	smallRes, err := r.serveSmall(ctx, small)
	if err != nil {
		return 0, fmt.Errorf("small data set: %w", err)
	}
	if err := r.selfProfile("cpu-append-benchtool.pprof", func() error { return r.appendBench(ctx) }); err != nil {
		return 0, fmt.Errorf("append: %w", err)
	}
	largeRes, err := r.serveLarge(ctx, large)
	if err != nil {
		return 0, fmt.Errorf("large data set: %w", err)
	}
	// The two sets are served minutes apart on a shared machine, so each
	// validate rate is first taken relative to /healthz measured interleaved
	// with it on the same server: what remains is the cost of the larger set.
	relLarge := largeRes.validatePeak / largeRes.healthzPeak
	relSmall := smallRes.validatePeak / smallRes.healthzPeak
	sf := ratioFigure("validate_scale",
		fmt.Sprintf("validate at %s vs %s live sessions (each relative to its /healthz)", human(large.sessions), human(small.sessions)),
		"× healthz", relLarge, relSmall, "at "+human(small.sessions), 0.8)
	sf.Note = fmt.Sprintf("raw: %.0f vs %.0f req/s", largeRes.validatePeak, smallRes.validatePeak)
	r.add(withDetail(sf, map[string]any{"pool_large": large.poolSize, "pool_small": small.poolSize,
		"validate_large_rps": largeRes.validatePeak, "validate_small_rps": smallRes.validatePeak,
		"healthz_large_rps": largeRes.healthzPeak, "healthz_small_rps": smallRes.healthzPeak,
		"bare_large_rps": largeRes.barePeak, "bare_small_rps": smallRes.barePeak,
		"raw_ratio": largeRes.validatePeak / smallRes.validatePeak}))

	if err := r.attackBench(ctx, small); err != nil {
		return 0, fmt.Errorf("under attack: %w", err)
	}
	return large.poolSize, nil
}

// validatePhase is --only validate: the large data set seeded, its
// projection built by `ledger rebuild` once JetStream's duplicate window
// has passed (as allPhases builds it, without the rebuild figure), then
// served as in the full run (serveLarge). It returns the size of the token
// pool.
func (r *runner) validatePhase(ctx context.Context, pwHash string) (int, error) {
	s := r.s
	if s.reuse {
		large, err := loadDataset(filepath.Join(r.work, "large"))
		if err != nil {
			return 0, fmt.Errorf("--reuse: %w", err)
		}
		r.note("--reuse: the large data set (%s sessions) was seeded and rebuilt by an earlier run at %s; the touched row's sessions may have been used by earlier runs",
			human(large.sessions), large.seededAt.UTC().Format(time.RFC3339))
		if _, err := r.serveLarge(ctx, large); err != nil {
			return 0, fmt.Errorf("large data set: %w", err)
		}
		return large.poolSize, nil
	}
	large, err := seedDataset(ctx, filepath.Join(r.work, "large"), s.large, s.perUser, s.pool, s.touchPool, pwHash)
	if err != nil {
		return 0, fmt.Errorf("seed large: %w", err)
	}
	inWindow, _, err := r.pastDedupeWindow(ctx, large, "rebuild: ")
	if err != nil {
		return 0, err
	}
	if inWindow {
		r.note("the rebuild ran within JetStream's 2-minute duplicate window of the seeding (--no-dedupe-wait)")
	}
	if _, err := r.ledgerRebuild(ctx, large, nil, nil); err != nil {
		return 0, fmt.Errorf("rebuild: %w", err)
	}
	if _, err := r.serveLarge(ctx, large); err != nil {
		return 0, fmt.Errorf("large data set: %w", err)
	}
	return large.poolSize, nil
}

// auditPhase is the auditor's tools on the large data set, server stopped
// and its projection built (by the rebuild): audit verify in this process
// against raw reads, then as a command (its peak RSS), then point queries.
func (r *runner) auditPhase(ctx context.Context, large *dataset) error {
	if err := r.selfProfile("cpu-verify-benchtool.pprof", func() error { return r.verifyBench(ctx, large) }); err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	if err := r.verifyRSSBench(ctx, large); err != nil {
		return fmt.Errorf("audit verify command: %w", err)
	}
	if err := r.pointQueryBench(ctx, large); err != nil {
		return fmt.Errorf("audit point query: %w", err)
	}
	return nil
}

func withDetail(f Figure, d map[string]any) Figure {
	if f.Detail == nil {
		f.Detail = map[string]any{}
	}
	for k, v := range d {
		f.Detail[k] = v
	}
	return f
}

func mode(s settings) string {
	m := "full"
	if s.quick {
		m = "quick"
	}
	if s.only != "" {
		m += ", " + s.only + " only"
	}
	return m
}

func commandLine() string {
	args := append([]string{"scripts/bench"}, os.Args[1:]...)
	return strings.Join(args, " ")
}

// orderFigures keeps the table in the order of the issue.
func orderFigures(fs []Figure) []Figure {
	order := []string{"validate_throughput", "validate_vs_bare", "validate_touched", "validate_p99_half_peak", "validate_throughput_large",
		"validate_vs_bare_large", "validate_touched_large", "validate_p99_half_peak_large", "validate_scale", "append_rate", "append_rate_nosync",
		"append_facts", "record_uses", "rebuild_rate", "check_cost", "live_apply_rate", "verify_rate", "login_rate", "memory"}
	for _, sc := range attackScenarios {
		for _, k := range attackKinds {
			order = append(order, attackFigureID(sc.id, k))
		}
	}
	rank := func(id string) int {
		for i, o := range order {
			if o == id {
				return i
			}
		}
		return len(order)
	}
	out := append([]Figure(nil), fs...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && rank(out[j].ID) < rank(out[j-1].ID); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func renderTable(rep Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nledger benchmark (%s mode), %s, %d CPUs (%s), %s, load average %s at start, %s at end\n\n", rep.Mode,
		rep.StartedAt.Format(time.RFC3339), rep.Machine.NProc, rep.Machine.CPUModel, rep.Machine.GoVersion, rep.LoadAvg[0], rep.LoadAvg[1])
	if len(rep.Growth) > 0 {
		fmt.Fprint(&b, renderGrowth(rep.Growth))
	}
	if len(rep.Figures) > 0 {
		fmt.Fprintln(&b, "| figure | value | baseline | ratio | goal | met |")
		fmt.Fprintln(&b, "|---|---|---|---|---|---|")
	}
	for _, f := range rep.Figures {
		base, ratio := "-", "-"
		if f.Baseline > 0 {
			base = fmt.Sprintf("%s %s (%s)", fmtNum(f.Baseline), f.Unit, f.BaselineName)
			ratio = fmt.Sprintf("%.2f×", f.Ratio)
		}
		met := "-"
		if f.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*f.Met]
		}
		goal := f.Goal
		if goal == "" {
			goal = "-"
		}
		val := fmtNum(f.Value) + " " + f.Unit
		if f.Note != "" {
			val += " (" + f.Note + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", f.Name, val, base, ratio, goal, met)
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(&b)
		for _, n := range rep.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	fmt.Fprintln(&b)
	return b.String()
}

func fmtNum(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func human(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	default:
		return fmt.Sprint(n)
	}
}

// Machine describes where the figures were taken.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	Wrk       string `json:"wrk"`
}

func describeMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m.MemTotal = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("wrk", "-v").CombinedOutput(); err == nil || len(out) > 0 {
		line, _, _ := strings.Cut(string(out), "\n")
		m.Wrk = strings.TrimSpace(strings.Split(line, " Copyright")[0])
	}
	return m
}

// copyLines copies r to w line by line, calling fn on each line.
func copyLines(r io.Reader, w io.Writer, fn func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if w != nil {
			fmt.Fprintln(w, line)
		}
		if fn != nil {
			fn(line)
		}
	}
}

// loadAvg is the 1, 5 and 15 minute load average: on a shared machine it
// says how much else was running.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
