package projections

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/eventstore"
)

// IntegrityConfig configures an Integrity tracker.
type IntegrityConfig struct {
	// Read is the stream the projection follows; Origin the one writes go
	// to (the same stream unless the instance reads a mirror).
	Read, Origin *eventstore.Reader
	// Every is how often the stream's configuration and state are checked
	// (default 1s); content is re-checked one digest window every
	// DigestWindowEvery checks (default 10).
	Every             time.Duration
	DigestWindowEvery int
	Registerer        prometheus.Registerer
	Log               *slog.Logger
}

// Integrity keeps checking that the stream is still the ledger's (see
// eventstore.CheckStream): its configuration cannot remove messages, none
// were removed, it reaches what the projection applied, it was not
// re-created, and the content behind the recorded stream digests is still
// there. It only reports; it never repairs the stream.
type Integrity struct {
	p   *Projection
	cfg IntegrityConfig
	log *slog.Logger

	mu        sync.Mutex
	findings  []string
	checkedAt time.Time
	runs      int
	window    int // next digest window to re-check, counted from the newest

	tampered prometheus.Gauge
}

func NewIntegrity(p *Projection, cfg IntegrityConfig) *Integrity {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.DigestWindowEvery <= 0 {
		cfg.DigestWindowEvery = 10
	}
	if cfg.Origin == nil {
		cfg.Origin = cfg.Read
	}
	log := cfg.Log
	if log == nil {
		log = p.log
	}
	i := &Integrity{p: p, cfg: cfg, log: log, tampered: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ledger_stream_tampered", Help: "1 if the ledger stream is no longer append-only and complete (see /readyz), else 0."})}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(i.tampered)
	}
	return i
}

// Findings is what the last check found wrong (nil: intact) and when it ran.
func (i *Integrity) Findings() ([]string, time.Time) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.findings), i.checkedAt
}

// Check runs one check now and returns what is wrong. An unreachable stream
// is not a finding (freshness fails closed on it) and keeps the last one.
func (i *Integrity) Check(ctx context.Context) []string {
	created, err := i.p.streamCreated()
	if err != nil {
		i.log.Warn("integrity: read recorded stream creation time", "err", err)
	}
	applied := i.p.Applied()
	findings, info, err := i.cfg.Read.CheckStream(ctx, eventstore.StreamExpectations{Applied: applied, Created: created})
	if err != nil {
		i.mu.Lock()
		defer i.mu.Unlock()
		return slices.Clone(i.findings)
	}
	if info != nil && created.IsZero() {
		if err := i.p.recordStreamCreated(info.Created); err != nil {
			i.log.Warn("integrity: record stream creation time", "err", err)
		}
	}
	if i.cfg.Origin != i.cfg.Read {
		more, _, err := i.cfg.Origin.CheckStream(ctx, eventstore.StreamExpectations{Applied: applied})
		if err == nil {
			for _, f := range more {
				findings = append(findings, "origin stream: "+f)
			}
		}
	}
	i.mu.Lock()
	i.runs++
	checkContent := i.runs%i.cfg.DigestWindowEvery == 1
	i.mu.Unlock()
	if checkContent && info != nil {
		if f := i.checkWindow(ctx); f != "" {
			findings = append(findings, f)
		}
	}
	i.publish(findings)
	return findings
}

// checkWindow re-reads one window between recorded digest checkpoints, the
// newest first and then further back on each call, so that over time every
// recorded digest is checked again.
func (i *Integrity) checkWindow(ctx context.Context) string {
	cps, err := i.p.DigestCheckpoints()
	if err != nil || len(cps) == 0 {
		return ""
	}
	i.mu.Lock()
	n := i.window % len(cps)
	i.window++
	i.mu.Unlock()
	idx := len(cps) - 1 - n
	var from eventstore.Checkpoint // the empty stream's digest at sequence 0
	if idx > 0 {
		from = cps[idx-1]
	}
	err = i.cfg.Read.CheckDigestWindow(ctx, from, cps[idx])
	if errors.Is(err, eventstore.ErrStreamTampered) {
		return err.Error()
	}
	return ""
}

func (i *Integrity) publish(findings []string) {
	i.mu.Lock()
	changed := !slices.Equal(findings, i.findings)
	i.findings, i.checkedAt = findings, time.Now()
	i.mu.Unlock()
	if len(findings) > 0 {
		i.tampered.Set(1)
	} else {
		i.tampered.Set(0)
	}
	if changed && len(findings) > 0 {
		i.log.Error("the ledger stream was tampered with; it will not be repaired automatically", "findings", findings)
	} else if changed {
		i.log.Info("the ledger stream checks out again")
	}
}

// Run checks every Every until ctx ends.
func (i *Integrity) Run(ctx context.Context) {
	t := time.NewTicker(i.cfg.Every)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, max(i.cfg.Every, 5*time.Second))
		i.Check(cctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Projection) streamCreated() (time.Time, error) {
	v, closer, err := p.db.Get(keyStream)
	if errors.Is(err, pebble.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	defer closer.Close()
	if len(v) != timeLen {
		return time.Time{}, nil
	}
	return readTime(v), nil
}

func (p *Projection) recordStreamCreated(t time.Time) error {
	return p.db.Set(keyStream, appendTime(nil, t), pebble.NoSync)
}
