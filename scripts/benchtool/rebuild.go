package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/eventstore"
)

var (
	rebuildDone     = regexp.MustCompile(`rebuild: done, (\d+) events in (\S+) \((\d+) events/s\)`)
	rebuildRejected = regexp.MustCompile(`rebuild: (\d+) messages rejected`)
)

// rebuildBench runs `ledger rebuild` on the large data set (server stopped)
// and compares its rate with a raw ordered-consumer read of the same stream.
func (r *runner) rebuildBench(ctx context.Context, ds *dataset) error {
	// A rebuild inside the window holds every seeded message id in the
	// embedded server: hundreds of MiB at 1M that no rebuild of a stream
	// in production carries, and under the rebuild's soft memory limit a
	// collector that never rests.
	inWindow, _, err := r.pastDedupeWindow(ctx, ds, "rebuild: ")
	if err != nil {
		return err
	}
	raw, err := rawRead(ctx, ds.dir)
	if err != nil {
		return fmt.Errorf("raw read: %w", err)
	}
	rawRate, rawEvents := raw.rate, raw.events
	logf("raw ordered-consumer read: %d events at %.0f events/s, %.2f µs of CPU each", rawEvents, rawRate, raw.cpuPerEvent())

	env, addrFile := r.pprofEnv("rebuild")
	var profiled func()
	if r.prof != "" {
		profiled = func() {
			secs := max(5, min(30, ds.events/20_000))
			if err := r.fetchProfile(ctx, addrFile, fmt.Sprintf("profile?seconds=%d", secs), "cpu-rebuild.pprof"); err != nil {
				logf("profile rebuild: %v", err)
			}
		}
	}
	rb, err := r.ledgerRebuild(ctx, ds, env, profiled)
	if err != nil {
		return err
	}
	events, rate, took, hwm := rb.events, rb.rate, rb.took, rb.hwm

	f := ratioFigure("rebuild_rate", fmt.Sprintf("rebuild rate (ledger rebuild, %d events, each checked: hash, chain, MAC)", events), "events/s",
		rate, rawRate, "raw ordered-consumer read", 0.7)
	f.Note = fmt.Sprintf("%.1f s, %.1f µs/event; rebuild peak RSS %.0f MiB; CPU %.1f µs/event (the whole command, its start included); %s",
		took.Seconds(), 1e6/rate, float64(hwm)/mib, rb.cpu.Seconds()*1e6/float64(events), raw.budgetNote(0.7))
	r.add(withDetail(f, map[string]any{"events": events, "seconds": took.Seconds(), "raw_events": rawEvents,
		"us_per_event": 1e6 / rate, "rebuild_vmhwm_mib": float64(hwm) / mib, "dedupe_window_rebuilt": inWindow,
		"cpu_us_per_event": rb.cpu.Seconds() * 1e6 / float64(events), "raw_cpu_us_per_event": raw.cpuPerEvent(),
		"cpu_budget_us_per_event_at_goal": raw.budget(0.7)}))
	r.rebuildUS = 1e6 / rate
	return nil
}

// rebuildRun is one `ledger rebuild` as its summary line reports it, and
// the command's peak RSS.
type rebuildRun struct {
	events int64
	rate   float64 // events/s
	took   time.Duration
	hwm    int64         // VmHWM, bytes
	wall   time.Duration // the whole command, start to exit
	cpu    time.Duration // the whole command's user and system CPU time
}

// ledgerRebuild runs `ledger rebuild` on a stopped data set (with env
// added to its environment, and started() called in a goroutine once it
// runs, if given) and fails if it rejects a single message.
func (r *runner) ledgerRebuild(ctx context.Context, ds *dataset, env []string, started func()) (rebuildRun, error) {
	logf("ledger rebuild --data-dir %s", ds.dir)
	cmd := exec.CommandContext(ctx, r.ledger, "rebuild", "--data-dir", ds.dir, "--log-level", "warn")
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return rebuildRun{}, err
	}
	if started != nil {
		go started()
	}
	hwm, waitErr := waitPeakRSS(cmd, 100*time.Millisecond)
	wall := time.Since(begin)
	if waitErr != nil {
		return rebuildRun{}, fmt.Errorf("ledger rebuild: %w\n%s", waitErr, out.Bytes())
	}
	m := rebuildDone.FindSubmatch(out.Bytes())
	if m == nil {
		return rebuildRun{}, fmt.Errorf("ledger rebuild: no summary line in output:\n%s", out.Bytes())
	}
	// Every seeded event must pass the checks; a rejection means the bench
	// wrote a ledger the server does not accept, and the rate would not be
	// that of applying it.
	if rej := rebuildRejected.FindSubmatch(out.Bytes()); rej != nil {
		return rebuildRun{}, fmt.Errorf("ledger rebuild rejected %s seeded messages:\n%s", rej[1], out.Bytes())
	}
	events, _ := strconv.ParseInt(string(m[1]), 10, 64)
	rate, _ := strconv.ParseFloat(string(m[3]), 64)
	took, _ := time.ParseDuration(string(m[2]))
	logf("%s", m[0])
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return rebuildRun{events: events, rate: rate, took: took, hwm: hwm, wall: wall, cpu: cpu}, nil
}

// rawRead reads the whole stream of dataDir through an ordered consumer with
// the same pull batch as eventstore.Store.ReadFrom, doing nothing with the
// messages.
func rawRead(ctx context.Context, dataDir string) (rawReadResult, error) {
	emb, nc, err := startNATS(filepath.Join(dataDir, "nats"), "bench-read", false)
	if err != nil {
		return rawReadResult{}, err
	}
	defer emb.Shutdown()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return rawReadResult{}, err
	}
	stream, err := js.Stream(ctx, eventstore.DefaultStream)
	if err != nil {
		return rawReadResult{}, err
	}
	return rawReadStream(ctx, stream)
}

// rawReadResult is one raw read: its rate and the CPU it took. The CPU is
// the bench process's, which then does nothing but the read, on both of
// its sides: the embedded server's consumer and the client.
type rawReadResult struct {
	rate   float64 // events/s
	events int
	cpu    float64 // seconds, user and system
}

func (r rawReadResult) cpuPerEvent() float64 { return r.cpu * 1e6 / float64(r.events) }

// budget is the CPU per event, in µs, that a reader running at goal times
// this read's rate has on this machine's cores beyond what the read itself
// takes: what every check, decode and write of a rebuild or a verify must
// fit in. Negative or small, the goal is out of reach on these cores
// whatever the code, as long as the read costs what it costs here.
func (r rawReadResult) budget(goal float64) float64 {
	return float64(runtime.NumCPU())*1e6/(r.rate*goal) - r.cpuPerEvent()
}

func (r rawReadResult) budgetNote(goal float64) string {
	return fmt.Sprintf("the raw read takes %.2f µs of CPU per event (%.2f cores); at %.1f× its rate, %d cores leave %.2f µs of CPU per event beyond it",
		r.cpuPerEvent(), r.cpu*r.rate/float64(r.events), goal, runtime.NumCPU(), r.budget(goal))
}

// rawReadStream is rawRead on an open stream.
func rawReadStream(ctx context.Context, stream jetstream.Stream) (rawReadResult, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return rawReadResult{}, err
	}
	total := int(info.State.Msgs)
	start, cpu := time.Now(), cpuSeconds(os.Getpid())
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return rawReadResult{}, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return rawReadResult{}, err
	}
	defer it.Stop()
	n := 0
	for n < total {
		msg, err := it.Next()
		if err != nil {
			return rawReadResult{}, err
		}
		_ = msg.Data()
		n++
	}
	el := time.Since(start)
	return rawReadResult{rate: float64(n) / el.Seconds(), events: n, cpu: cpuSeconds(os.Getpid()) - cpu}, nil
}

// waitPeakRSS waits for a started command and returns its peak RSS
// (VmHWM, read every `every` until it exits: rusage would report the bench
// process's own size, inherited at exec) and Wait's error.
func waitPeakRSS(cmd *exec.Cmd, every time.Duration) (int64, error) {
	var hwm int64
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		if h, _, err := procStatus(cmd.Process.Pid); err == nil {
			hwm = max(hwm, h)
		}
		select {
		case err := <-exited:
			return hwm, err
		case <-time.After(every):
		}
	}
}
