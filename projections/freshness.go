package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrProjectionBehind is what a read gets when this instance cannot show it
// holds what it was asked for: the requested sequence did not arrive in
// time, or the instance has not confirmed within the lag bound that it has
// applied everything the stream held. Answering anyway could call a revoked
// token valid, so the read fails closed instead.
var ErrProjectionBehind = errors.New("projection behind the stream")

// BehindError explains an ErrProjectionBehind.
type BehindError struct {
	Applied uint64 // last sequence applied here
	Want    uint64 // requested min_seq (0: none)
	// Stale is how long ago the instance last confirmed it was caught up
	// (0 with Never).
	Stale time.Duration
	Never bool
}

func (e *BehindError) Error() string {
	switch {
	case e.Want > e.Applied:
		return fmt.Sprintf("this instance has applied the ledger up to sequence %d, not yet %d; retry", e.Applied, e.Want)
	case e.Never:
		return "this instance has not yet confirmed it is caught up with the ledger stream; retry"
	default:
		return fmt.Sprintf("this instance last confirmed it was caught up with the ledger stream %s ago, more than the allowed lag; retry", e.Stale.Round(time.Millisecond))
	}
}

func (e *BehindError) Is(target error) bool { return target == ErrProjectionBehind }

// FreshnessConfig configures a Freshness tracker.
type FreshnessConfig struct {
	// LastSeq reads the last sequence of the stream that writes go to (the
	// origin, also when this instance reads a mirror).
	LastSeq func(ctx context.Context) (uint64, error)
	// MaxLag bounds how stale a read may be: past it, reads fail closed.
	// Default 5s.
	MaxLag time.Duration
	// Every is the poll interval; default MaxLag/5.
	Every time.Duration
	// MinSeqWait bounds how long Await waits for a requested sequence.
	// Default 2s.
	MinSeqWait time.Duration
	// Restart is called when the stream is ahead of the projection and the
	// projection has not moved for StallAfter (default MaxLag/2): the live
	// subscription is presumed lost and should resume from the checkpoint.
	Restart    func()
	StallAfter time.Duration
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock (default time.Now). It is never the service's
	// injected domain clock: freshness is about real elapsed time, measured
	// on the monotonic clock (time.Now's monotonic reading), so a wall
	// clock stepped backwards cannot make a stale instance look fresh.
	Now func() time.Time
}

// Freshness tracks whether the projection is caught up with the stream. It
// polls the stream's last sequence L at time t; once the projection has
// applied L, everything written before t is visible here, and the instance
// is "fresh as of t". Reads check that now − freshAsOf stays within MaxLag.
type Freshness struct {
	p   *Projection
	cfg FreshnessConfig
	log *slog.Logger

	started time.Time // carries the monotonic reading everything is measured from
	// freshAsOf is when the newest confirmed probe was sent, as nanoseconds
	// after started on the monotonic clock, plus one (0: never).
	freshAsOf atomic.Int64
	lastSeq   atomic.Uint64

	mu      sync.Mutex
	pending []probe // probes not yet covered by the projection, oldest first

	restarts, probeErrors prometheus.Counter
}

type probe struct {
	seq uint64
	at  time.Time
}

// NewFreshness builds a tracker for p; call Run to start it.
func NewFreshness(p *Projection, cfg FreshnessConfig) *Freshness {
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = 5 * time.Second
	}
	if cfg.Every <= 0 {
		cfg.Every = cfg.MaxLag / 5
	}
	if cfg.MinSeqWait <= 0 {
		cfg.MinSeqWait = 2 * time.Second
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = max(cfg.MaxLag/2, 2*cfg.Every)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = p.log
	}
	f := &Freshness{p: p, cfg: cfg, log: log, started: cfg.Now()}
	f.restarts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ledger_projection_restarts_total", Help: "Live subscriptions restarted from the checkpoint because the projection stalled behind the stream."})
	f.probeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ledger_stream_probe_errors_total", Help: "Failed polls of the stream's last sequence (stream unreachable)."})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(f.restarts, f.probeErrors,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "ledger_stream_last_seq", Help: "Last sequence in the ledger stream, as last seen."},
				func() float64 { return float64(f.lastSeq.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "ledger_projection_lag_events", Help: "Stream messages not yet applied to the local projection, as of the last poll."},
				func() float64 { return float64(f.lagEvents()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "ledger_projection_lag_seconds", Help: "Seconds since this instance last confirmed it had applied everything in the stream."},
				func() float64 { return f.staleness().Seconds() }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "ledger_projection_fresh", Help: "1 if reads are served (lag within --max-lag), 0 if they fail closed."},
				func() float64 {
					if f.Check() == nil {
						return 1
					}
					return 0
				}),
		)
	}
	return f
}

// MaxLag is the configured bound.
func (f *Freshness) MaxLag() time.Duration { return f.cfg.MaxLag }

func (f *Freshness) lagEvents() uint64 {
	last, applied := f.lastSeq.Load(), f.p.Applied()
	if last > applied {
		return last - applied
	}
	return 0
}

// sinceStart is t on the monotonic clock, as an offset from started.
func (f *Freshness) sinceStart(t time.Time) int64 { return int64(t.Sub(f.started)) + 1 }

func (f *Freshness) staleness() time.Duration {
	now := f.sinceStart(f.cfg.Now())
	as := f.freshAsOf.Load()
	if as == 0 {
		return time.Duration(now - 1)
	}
	return time.Duration(now - as)
}

// Check reports whether reads may be served now: the instance confirmed it
// was caught up no longer than MaxLag ago.
func (f *Freshness) Check() error {
	if f.freshAsOf.Load() == 0 {
		return &BehindError{Applied: f.p.Applied(), Never: true}
	}
	if stale := f.staleness(); stale > f.cfg.MaxLag {
		return &BehindError{Applied: f.p.Applied(), Stale: stale}
	}
	return nil
}

// WaitApplied waits, at most MinSeqWait, until the projection has applied
// seq. Its error matches ErrProjectionBehind.
func (f *Freshness) WaitApplied(ctx context.Context, seq uint64) error {
	if seq == 0 || f.p.Applied() >= seq {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, f.cfg.MinSeqWait)
	defer cancel()
	if err := f.p.WaitFor(wctx, seq); err != nil {
		return &BehindError{Applied: f.p.Applied(), Want: seq}
	}
	return nil
}

// ErrBeyondLog is what a wait for a sequence the stream has not reached gets:
// no write ever answered with it, so waiting would only hold the request.
var ErrBeyondLog = errors.New("the sequence is beyond the end of the ledger")

// InLog reports whether the stream has reached seq: at once if the last
// poll saw it, otherwise by asking the stream now (a write on another
// instance may be newer than the last poll).
func (f *Freshness) InLog(ctx context.Context, seq uint64) error {
	if seq <= f.lastSeq.Load() {
		return nil
	}
	qctx, cancel := context.WithTimeout(ctx, max(f.cfg.Every, time.Second))
	defer cancel()
	last, err := f.cfg.LastSeq(qctx)
	if err != nil {
		return nil // cannot tell: let the bounded wait decide
	}
	if seq > last {
		return fmt.Errorf("%w (%d > %d)", ErrBeyondLog, seq, last)
	}
	return nil
}

// Await is WaitApplied(minSeq) followed by Check.
func (f *Freshness) Await(ctx context.Context, minSeq uint64) error {
	if err := f.WaitApplied(ctx, minSeq); err != nil {
		return err
	}
	return f.Check()
}

// FreshAsOf is the time up to which this instance is known to hold every
// event (zero if never confirmed), for display.
func (f *Freshness) FreshAsOf() time.Time {
	as := f.freshAsOf.Load()
	if as == 0 {
		return time.Time{}
	}
	return f.started.Add(time.Duration(as - 1)).Round(0)
}

// FreshnessStatus describes the tracker for /readyz.
type FreshnessStatus struct {
	AppliedSeq    uint64
	StreamLastSeq uint64 // as of the last poll
	LagEvents     uint64
	Lag           time.Duration // since the instance last confirmed it was caught up
	MaxLag        time.Duration
	FreshAsOf     time.Time // zero if never confirmed
}

// Status describes the tracker now.
func (f *Freshness) Status() FreshnessStatus {
	return FreshnessStatus{
		AppliedSeq: f.p.Applied(), StreamLastSeq: f.lastSeq.Load(), LagEvents: f.lagEvents(),
		Lag: f.staleness(), MaxLag: f.cfg.MaxLag, FreshAsOf: f.FreshAsOf(),
	}
}

// Probe polls the stream's last sequence once and records it; if the
// projection already holds it, the instance is fresh as of the moment the
// poll was sent.
func (f *Freshness) Probe(ctx context.Context) error {
	at := f.cfg.Now()
	qctx, cancel := context.WithTimeout(ctx, max(f.cfg.Every, 100*time.Millisecond))
	seq, err := f.cfg.LastSeq(qctx)
	cancel()
	if err != nil {
		f.probeErrors.Inc()
		return err
	}
	f.lastSeq.Store(seq)
	f.mu.Lock()
	f.pending = append(f.pending, probe{seq: seq, at: at})
	if len(f.pending) > 64 {
		f.pending = append(f.pending[:0], f.pending[len(f.pending)-64:]...)
	}
	f.mu.Unlock()
	f.promote()
	return nil
}

// promote marks the instance fresh as of the newest probe the projection
// now covers, and forgets that probe and every older one.
func (f *Freshness) promote() {
	applied := f.p.Applied()
	f.mu.Lock()
	newest := -1
	for i, pr := range f.pending {
		if pr.seq <= applied {
			newest = i
		}
	}
	var at time.Time
	if newest >= 0 {
		at = f.pending[newest].at
		f.pending = append(f.pending[:0], f.pending[newest+1:]...)
	}
	f.mu.Unlock()
	if newest < 0 {
		return
	}
	mono := f.sinceStart(at)
	for {
		cur := f.freshAsOf.Load()
		if mono <= cur || f.freshAsOf.CompareAndSwap(cur, mono) {
			return
		}
	}
}

// Run polls every Every until ctx ends, promotes probes as the projection
// advances, and asks for a restart of the live subscription when the
// projection stalls behind a reachable stream.
func (f *Freshness) Run(ctx context.Context) {
	t := time.NewTicker(f.cfg.Every)
	defer t.Stop()
	lastApplied, lastMove := f.p.Applied(), f.cfg.Now()
	var lastRestart time.Time
	for {
		probeErr := f.Probe(ctx)
		now := f.cfg.Now()
		if applied := f.p.Applied(); applied != lastApplied {
			lastApplied, lastMove = applied, now
		}
		behind := probeErr == nil && f.lastSeq.Load() > lastApplied
		if !behind {
			lastMove = now // nothing to wait for is not a stall
		}
		if behind && now.Sub(lastMove) >= f.cfg.StallAfter && now.Sub(lastRestart) >= f.cfg.StallAfter && f.cfg.Restart != nil {
			f.log.Warn("projection stalled behind the stream; restarting the live subscription",
				"applied", lastApplied, "stream_last_seq", f.lastSeq.Load(), "stalled_for", now.Sub(lastMove).Round(time.Millisecond))
			f.restarts.Inc()
			f.cfg.Restart()
			lastRestart, lastMove = now, now
		}
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				waiting = false
			case <-f.p.advanced():
				f.promote()
			}
		}
	}
}

// advanced is closed the next time the applied sequence grows.
func (p *Projection) advanced() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.advance
}
