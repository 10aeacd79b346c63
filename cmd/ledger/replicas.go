package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/projections"
)

// streamReplicas resolves --stream-replicas. 0 means automatic: 1 for the
// embedded server or a standalone nats-server, 3 when --nats-url reaches a
// clustered one. It only matters when the stream is created.
func streamReplicas(cfg LogConfig, nc *nats.Conn) int {
	if cfg.StreamReplicas > 0 {
		return cfg.StreamReplicas
	}
	if cfg.NATSURL != "" && nc != nil && nc.ConnectedClusterName() != "" {
		return 3
	}
	return 1
}

// openReadStream sets l.read, the stream the projection follows: the
// origin itself, or with --read-stream a mirror of it (created if missing),
// typically one kept in this instance's region.
func (l *ledgerLog) openReadStream(ctx context.Context, cfg LogConfig, replicas int, log *slog.Logger) error {
	if cfg.ReadStream == "" || cfg.ReadStream == l.store.StreamName() {
		l.read = l.store.Reader
		return nil
	}
	r, err := eventstore.OpenMirror(ctx, l.nc, eventstore.MirrorConfig{
		Name: cfg.ReadStream, Origin: l.store.StreamName(), Replicas: replicas, Cluster: cfg.ReadStreamCluster,
	})
	if err != nil {
		return err
	}
	log.Info("reading from mirror stream; writes go to the origin", "read_stream", r.StreamName(), "stream", l.store.StreamName())
	l.read = r
	return nil
}

// startFreshness starts the tracker that keeps reads fail-closed (see
// projections.Freshness) and returns the channel on which it asks the live
// subscription to restart. It waits, at most max-lag, for the first
// confirmation that the instance is caught up, so a healthy instance serves
// from its first request.
func (s *Service) startFreshness(bgCtx context.Context, cfg ServiceConfig, reg prometheus.Registerer) <-chan struct{} {
	restart := make(chan struct{}, 1)
	s.fresh = projections.NewFreshness(s.proj, projections.FreshnessConfig{
		LastSeq:    s.ll.store.LastSeq,
		MaxLag:     cfg.MaxLag,
		MinSeqWait: cfg.MinSeqWait,
		Restart: func() {
			select {
			case restart <- struct{}{}:
			default:
			}
		},
		Registerer: reg,
		Log:        s.log,
	})
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.fresh.Run(bgCtx)
	}()
	return restart
}

// awaitFresh waits, at most max-lag, until the tracker confirms the
// projection is caught up.
func (s *Service) awaitFresh(ctx context.Context) {
	deadline := time.Now().Add(s.fresh.MaxLag())
	for s.fresh.Check() != nil {
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.log.Warn("projection not confirmed caught up yet; validate fails closed until it is", "status", s.fresh.Status())
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readFlags choose the stream the projection follows (serve and rebuild).
type readFlags struct {
	ReadStream        string `name:"read-stream" env:"LEDGER_READ_STREAM" placeholder:"NAME" help:"Follow this mirror of --stream instead of --stream itself, e.g. LEDGER_EU in a region; created (as a JetStream mirror, which keeps the origin's sequence numbers) if missing. Writes still go to --stream."`
	ReadStreamCluster string `name:"read-stream-cluster" env:"LEDGER_READ_STREAM_CLUSTER" placeholder:"CLUSTER" help:"When creating --read-stream, place it in this NATS cluster (the region's cluster in a super-cluster)."`
}

// freshnessFlags bound how stale an answer may be.
type freshnessFlags struct {
	MaxLag     time.Duration `name:"max-lag" default:"${default_max_lag}" env:"LEDGER_MAX_LAG" help:"Fail closed past this: if the instance cannot confirm it has applied everything in the stream within this long (NATS unreachable, subscription stalled, lag too large), validate answers 503 PROJECTION_BEHIND and /readyz fails."`
	MinSeqWait time.Duration `name:"min-seq-wait" default:"${default_min_seq_wait}" env:"LEDGER_MIN_SEQ_WAIT" help:"How long a request carrying X-Ledger-Min-Seq (or ?min_seq=) waits for this instance to apply that sequence before answering 503 PROJECTION_BEHIND."`
}
