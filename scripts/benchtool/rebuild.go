package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	rawRate, rawEvents, err := rawRead(ctx, ds.dir)
	if err != nil {
		return fmt.Errorf("raw read: %w", err)
	}
	logf("raw ordered-consumer read: %d events at %.0f events/s", rawEvents, rawRate)

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
	f.Note = fmt.Sprintf("%.1f s, %.1f µs/event; rebuild peak RSS %.0f MiB", took.Seconds(), 1e6/rate, float64(hwm)/mib)
	r.add(withDetail(f, map[string]any{"events": events, "seconds": took.Seconds(), "raw_events": rawEvents,
		"us_per_event": 1e6 / rate, "rebuild_vmhwm_mib": float64(hwm) / mib, "dedupe_window_rebuilt": inWindow}))
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
	return rebuildRun{events: events, rate: rate, took: took, hwm: hwm, wall: wall}, nil
}

// rawRead reads the whole stream of dataDir through an ordered consumer with
// the same pull batch as eventstore.Store.ReadFrom, doing nothing with the
// messages, and returns events/s.
func rawRead(ctx context.Context, dataDir string) (float64, int, error) {
	emb, nc, err := startNATS(filepath.Join(dataDir, "nats"), "bench-read", false)
	if err != nil {
		return 0, 0, err
	}
	defer emb.Shutdown()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, err
	}
	stream, err := js.Stream(ctx, eventstore.DefaultStream)
	if err != nil {
		return 0, 0, err
	}
	return rawReadStream(ctx, stream)
}

// rawReadStream is rawRead on an open stream.
func rawReadStream(ctx context.Context, stream jetstream.Stream) (float64, int, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	total := int(info.State.Msgs)
	start := time.Now()
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return 0, 0, err
	}
	defer it.Stop()
	n := 0
	for n < total {
		msg, err := it.Next()
		if err != nil {
			return 0, 0, err
		}
		_ = msg.Data()
		n++
	}
	el := time.Since(start)
	return float64(n) / el.Seconds(), n, nil
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
