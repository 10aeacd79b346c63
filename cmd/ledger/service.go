package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/eventstore/natsauth"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/httpapi"
	"github.com/sessionledger/ledger/handlers/query"
	"github.com/sessionledger/ledger/projections"
)

// LogConfig is how the ledger reaches its stream.
type LogConfig struct {
	DataDir        string
	NATSURL        string // comma-separated; empty runs the embedded server
	NATSListen     string // embedded server: accept outside connections here
	NoSync         bool   // embedded server: relax fsync-per-write
	Stream         string
	StreamReplicas int // 0: 1 embedded or standalone, 3 on a cluster
	// ReadStream, if set, is a mirror of Stream that the projection follows
	// (created if missing, in ReadStreamCluster if set); writes still go to
	// Stream.
	ReadStream        string
	ReadStreamCluster string
	// SigningKeyFile is the key ring (PEM); default <data-dir>/signing.key,
	// created at a new ledger's first start.
	SigningKeyFile string
	// NATS authenticates this process to an external NATS (--nats-url).
	NATS natsauth.ClientConfig
}

// ServiceConfig is everything `ledger serve` runs with. Tests build it
// directly, with an injected clock.
type ServiceConfig struct {
	LogConfig
	HTTPAddr       string
	Policy         domain.Policy
	UseGranularity time.Duration
	UseQueueSize   int
	PasswordParams argon2id.Params
	Now            func() time.Time
	Logger         *slog.Logger
	// AdminKey is the raw audit API key; empty uses or creates one in the
	// data dir and prints it once to AdminKeyOut (default stderr).
	AdminKey    string
	AdminKeyOut io.Writer
	// MaxLag: past it without confirming it is caught up, validate fails
	// closed (503 PROJECTION_BEHIND) and /readyz fails. Default 5s.
	MaxLag time.Duration
	// MinSeqWait bounds the wait for a validate's min_seq. Default 2s.
	MinSeqWait time.Duration
}

// ledgerLog is an open connection to the stream, embedded or external.
type ledgerLog struct {
	emb    *eventstore.Embedded
	nc     *nats.Conn
	store  *eventstore.Store
	read   *eventstore.Reader // the projection's source: store, or a mirror of it
	dial   func() (*nats.Conn, error)
	unlock func()
	closed sync.Once
}

// openLog connects to NATS. The data dir is locked for as long as the log
// is open when the embedded server keeps its files there, or when the
// caller says it will use the projection there too. The embedded server
// accepts only the identities it keeps in <data-dir>/nats (writer.nk,
// reader.nk); the ledger itself connects as the writer.
func openLog(ctx context.Context, cfg LogConfig, log *slog.Logger, usesDataDir bool) (*ledgerLog, error) {
	l := &ledgerLog{}
	if cfg.NATSURL == "" || usesDataDir {
		unlock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		l.unlock = unlock
	}
	if cfg.NATSURL == "" {
		natsDir := filepath.Join(cfg.DataDir, "nats")
		ids, err := natsauth.LoadOrCreate(natsDir)
		if err != nil {
			l.close()
			return nil, err
		}
		emb, err := eventstore.StartEmbedded(eventstore.EmbeddedConfig{
			Dir:        natsDir,
			Listen:     cfg.NATSListen,
			SyncAlways: !cfg.NoSync,
			Users:      ids.ServerUsers(streamName(cfg)),
			Identity:   ids.Writer,
		})
		if err != nil {
			l.close()
			return nil, err
		}
		l.emb = emb
		l.dial = func() (*nats.Conn, error) { return emb.Connect("ledger") }
		if cfg.NATSListen != "" {
			log.Info("embedded NATS accepts connections (nkey authentication only)", "url", emb.ClientURL(),
				"writer", ids.WriterFile, "reader", ids.ReaderFile)
		}
	} else {
		if err := cfg.NATS.Validate(); err != nil {
			l.close()
			return nil, err
		}
		auth, err := cfg.NATS.Options()
		if err != nil {
			l.close()
			return nil, err
		}
		urls := cfg.NATSURL
		opts := append([]nats.Option{nats.Name("ledger"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
			nats.ErrorHandler(asyncErrors(log))}, auth...)
		if usesDataDir {
			// An instance's replies name its consumers; keep them off
			// _INBOX.>, which the read-only identity may subscribe to.
			// (Audit commands, which may run as the reader, keep the
			// default: the reader may subscribe only there.)
			opts = append(opts, nats.CustomInboxPrefix(natsauth.WriterInboxPrefix))
		}
		l.dial = func() (*nats.Conn, error) {
			nc, err := nats.Connect(urls, opts...)
			if err != nil {
				return nil, natsauth.Explain(urls, err)
			}
			return nc, nil
		}
	}
	nc, err := l.dial()
	if err != nil {
		l.close()
		return nil, err
	}
	l.nc = nc
	return l, nil
}

// asyncErrors logs what NATS reports outside any call. A read-only identity
// may not delete the short-lived consumers reads leave behind (they expire
// by themselves), so those refusals are not worth a warning.
func asyncErrors(log *slog.Logger) nats.ErrHandler {
	return func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "CONSUMER.DELETE") {
			log.Debug("nats: consumer cleanup not permitted for this identity", "err", err)
			return
		}
		log.Warn("nats", "err", err)
	}
}

func streamName(cfg LogConfig) string {
	if cfg.Stream == "" {
		return eventstore.DefaultStream
	}
	return cfg.Stream
}

// openStore opens the ledger stream (creating it only if create) and the
// stream the projection follows.
func (l *ledgerLog) openStore(ctx context.Context, cfg LogConfig, create bool) error {
	replicas := streamReplicas(cfg, l.nc)
	var err error
	l.store, err = eventstore.Open(ctx, l.nc, eventstore.Config{Stream: cfg.Stream, Replicas: replicas, Create: create})
	if err != nil {
		return err
	}
	return l.openReadStream(ctx, cfg, replicas, slog.New(slog.DiscardHandler))
}

// errLedgerLost is what a start or a rebuild says when the stream no longer
// holds what this data dir's projection applied.
func errLedgerLost(stream string, applied uint64, why error) error {
	return fmt.Errorf("%w: the stream %s no longer holds the ledger this data dir applied (up to sequence %d): %v. "+
		"The ledger will not start over it or create a new, empty stream: restore the stream from a backup "+
		"(or, to start a new ledger, use an empty data dir)", eventstore.ErrStreamTampered, stream, applied, why)
}

func (l *ledgerLog) close() { l.closed.Do(l.doClose) }

func (l *ledgerLog) doClose() {
	if l.nc != nil {
		_ = l.nc.Drain()
		for i := 0; i < 100 && !l.nc.IsClosed(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		l.nc.Close()
	}
	if l.emb != nil {
		l.emb.Shutdown()
	}
	if l.unlock != nil {
		l.unlock()
	}
}

func projectionDir(dataDir string) string { return filepath.Join(dataDir, "projection") }

func newID() string { return eventstore.NewEventID() }

// application wires the command and query handlers to the adapters: the
// projection reads, the event store writes.
func application(proj *projections.Projection, store *eventstore.Store, uses *query.UseRecorder, hasher *command.Argon2id, cfg ServiceConfig) (command.Handlers, query.Handlers, error) {
	users, err := command.NewUsers(proj, store, cfg.Now)
	if err != nil {
		return command.Handlers{}, query.Handlers{}, err
	}
	commands, err := command.New(command.Deps{
		Users: users, Log: store, Hasher: hasher, Creds: proj, Policy: cfg.Policy, Now: cfg.Now, NewID: newID,
	})
	if err != nil {
		return command.Handlers{}, query.Handlers{}, err
	}
	queries, err := query.New(query.Deps{Sessions: proj, Uses: uses, Log: store, Now: cfg.Now})
	return commands, queries, err
}

// Service is a running ledger instance.
type Service struct {
	log      *slog.Logger
	ll       *ledgerLog
	proj     *projections.Projection
	fresh    *projections.Freshness
	integ    *projections.Integrity
	uses     *query.UseRecorder
	stopUses context.CancelFunc
	srv      *http.Server
	addr     string
	cancel   context.CancelFunc
	bg       sync.WaitGroup
	serveErr chan error
	closed   sync.Once
}

// StartService opens the stream and the projection, catches up, and serves
// HTTP. It returns once the API is accepting requests.
func StartService(ctx context.Context, cfg ServiceConfig) (_ *Service, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s := &Service{log: log, serveErr: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.shutdownBackground()
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if s.ll, err = openLog(ctx, cfg.LogConfig, log, true); err != nil {
		return nil, err
	}
	ring, generated, err := keyringForLedger(cfg.LogConfig)
	if err != nil {
		return nil, err
	}
	if s.proj, err = projections.Open(projectionDir(cfg.DataDir), ring, log, reg); err != nil {
		return nil, err
	}
	if err := s.ll.openStore(ctx, cfg.LogConfig, s.proj.Applied() == 0); err != nil {
		if errors.Is(err, eventstore.ErrStreamMissing) {
			return nil, errLedgerLost(streamName(cfg.LogConfig), s.proj.Applied(), err)
		}
		return nil, err
	}
	s.ll.store.RegisterMetrics(reg)
	s.ll.store.SetTrust(s.proj, s.proj)
	s.ll.store.SetVerifier(ring)
	if err := introduce(ctx, s.ll.store, ring, generated, signingKeyPath(cfg.LogConfig)); err != nil {
		return nil, err
	}
	log.Info("catching up projection", "applied", s.proj.Applied())
	if err := s.proj.CatchUp(ctx, s.ll.read, nil); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("projection catch-up: %w", err)
		}
		// A storage error is retried by the live loop; a gap or a key this
		// instance lacks keeps it behind, failing closed, and /readyz says why.
		log.Error("projection catch-up stopped; the instance stays behind until it can go on", "applied", s.proj.Applied(), "err", err)
	}

	bgCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.integ = projections.NewIntegrity(s.proj, projections.IntegrityConfig{
		Read: s.ll.read.Stream(), Origin: s.ll.store.Stream(), Every: integrityEvery(cfg.MaxLag), Registerer: reg, Log: log,
	})
	s.integ.Check(ctx)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.integ.Run(bgCtx)
	}()
	restart := s.startFreshness(bgCtx, cfg, reg)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		_ = s.proj.RunLive(bgCtx, projections.LiveConfig{Store: s.ll.read, Dial: s.ll.dial, Log: log, Restart: restart})
	}()
	s.awaitFresh(ctx)

	hasher, err := command.NewArgon2id(cfg.PasswordParams)
	if err != nil {
		return nil, err
	}
	if cfg.AdminKeyOut == nil {
		cfg.AdminKeyOut = os.Stderr
	}
	adminKey, err := adminKey(cfg.AdminKey, cfg.DataDir, cfg.AdminKeyOut)
	if err != nil {
		return nil, err
	}
	if s.uses, err = query.NewUseRecorder(query.UseRecorderConfig{
		Granularity: cfg.UseGranularity, QueueSize: cfg.UseQueueSize,
		Log: s.ll.store, Versions: s.proj, Logger: log, Registerer: reg,
	}); err != nil {
		return nil, err
	}
	usesCtx, usesCancel := context.WithCancel(context.Background())
	go s.uses.Run(usesCtx)
	s.stopUses = usesCancel

	commands, queries, err := application(s.proj, s.ll.store, s.uses, hasher, cfg)
	if err != nil {
		return nil, err
	}
	api := httpapi.New(httpapi.Config{
		Commands:   commands,
		Queries:    queries,
		AdminKey:   &adminKey,
		Digests:    s.digests,
		Ready:      s.ready,
		Freshness:  s.fresh,
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Log:        log,
		Registerer: reg,
	})
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http listen: %w", err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() { s.serveErr <- s.srv.Serve(ln) }()
	log.Info("ledger serving", "http", s.addr, "applied", s.proj.Applied(), "stream", s.ll.store.StreamName())
	return s, nil
}

// URL is the base URL of the API.
func (s *Service) URL() string { return "http://" + s.addr }

// ServeErr reports the HTTP server stopping on its own.
func (s *Service) ServeErr() <-chan error { return s.serveErr }

func (s *Service) ready(ctx context.Context) (httpapi.Readiness, error) {
	st := s.fresh.Status()
	detail := httpapi.Readiness{
		AppliedSeq: st.AppliedSeq, StreamLastSeq: st.StreamLastSeq, LagEvents: st.LagEvents,
		LagSeconds: st.Lag.Seconds(), MaxLagSeconds: st.MaxLag.Seconds(),
	}
	if !st.FreshAsOf.IsZero() {
		detail.FreshAsOf = st.FreshAsOf.UTC().Format(time.RFC3339Nano)
	}
	if rejected, total, err := s.proj.Rejected(10); err == nil && total > 0 {
		// A rejected message cannot be repaired (the log is immutable) and
		// is an attack or a bug: the instance stays ready, but says so.
		detail.RejectedEvents, detail.Rejected, detail.Degraded = total, rejected, true
	}
	if findings, _ := s.integ.Findings(); len(findings) > 0 {
		detail.StreamFindings = findings
		return detail, &httpapi.NotReady{Reason: "STREAM_TAMPERED", Err: fmt.Errorf("the ledger stream is no longer append-only and complete: %s", strings.Join(findings, "; "))}
	}
	if err := s.proj.Blocked(); err != nil {
		reason := "PROJECTION_BLOCKED"
		if errors.Is(err, domain.ErrKeyUnavailable) {
			reason = "SIGNING_KEY_UNAVAILABLE"
		}
		return detail, &httpapi.NotReady{Reason: reason, Err: err}
	}
	if err := s.fresh.Check(); err != nil {
		return detail, err
	}
	last, err := s.ll.store.LastSeq(ctx)
	if err != nil {
		return detail, fmt.Errorf("jetstream unreachable: %w", err)
	}
	detail.StreamLastSeq = last
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err = s.proj.WaitFor(wctx, last)
	detail.AppliedSeq = s.proj.Applied()
	lag := last - min(last, detail.AppliedSeq)
	detail.Lag = &lag
	if err != nil {
		return detail, errors.New("projection is behind the stream")
	}
	return detail, nil
}

// integrityEvery checks the stream often enough that tampering shows
// within the freshness bound.
func integrityEvery(maxLag time.Duration) time.Duration {
	return max(maxLag/5, 100*time.Millisecond)
}

func (s *Service) digests() (httpapi.Digests, error) {
	return projectionDigests(s.proj)
}

// projectionDigests is what `ledger audit digest` and GET /v1/audit/digest
// report.
func projectionDigests(p *projections.Projection) (httpapi.Digests, error) {
	state, applied, err := p.DigestAt()
	if err != nil {
		return httpapi.Digests{}, err
	}
	stream, _ := p.StreamDigest()
	cps, err := p.DigestCheckpoints()
	if err != nil {
		return httpapi.Digests{}, err
	}
	d := httpapi.Digests{AppliedSeq: applied, StateDigest: state, StreamDigest: stream.String(), Checkpoints: make([]httpapi.DigestCheckpoint, 0, len(cps))}
	for _, c := range cps {
		d.Checkpoints = append(d.Checkpoints, httpapi.DigestCheckpoint{Seq: c.Seq, StreamDigest: c.Digest.String()})
	}
	if d.Rejected, d.RejectedEvents, err = p.Rejected(0); err != nil {
		return httpapi.Digests{}, err
	}
	return d, nil
}

// Close shuts down gracefully: stop taking requests and finish in-flight
// ones, flush queued uses to the stream, let the projection apply them,
// close Pebble, and stop NATS cleanly.
func (s *Service) Close(ctx context.Context) error {
	var err error
	s.closed.Do(func() {
		if s.srv != nil {
			if e := s.srv.Shutdown(ctx); e != nil {
				err = errors.Join(err, fmt.Errorf("http shutdown: %w", e))
			}
		}
		if s.stopUses != nil {
			s.stopUses()
			s.uses.Wait()
		}
		if s.ll != nil && s.proj != nil {
			if last, e := s.ll.store.LastSeq(ctx); e == nil {
				wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				_ = s.proj.WaitFor(wctx, last)
				cancel()
			}
		}
		err = errors.Join(err, s.shutdownBackground())
		s.log.Info("ledger stopped")
	})
	return err
}

func (s *Service) shutdownBackground() error {
	var err error
	if s.cancel != nil {
		s.cancel()
		s.bg.Wait()
	}
	if s.proj != nil {
		err = errors.Join(err, s.proj.Close())
	}
	if s.ll != nil {
		s.ll.close()
	}
	return err
}

// rebuild drops the projection and replays the whole stream into a fresh
// one, printing progress to out. Every event is checked as live, so the key
// ring is needed; a stream that lost events is refused.
func rebuild(ctx context.Context, cfg LogConfig, out io.Writer, log *slog.Logger) error {
	ll, err := openLog(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer ll.close()
	ring, err := keyfile.LoadRing(signingKeyPath(cfg))
	if err != nil {
		return err
	}
	if err := ll.openStore(ctx, cfg, false); err != nil {
		if errors.Is(err, eventstore.ErrStreamMissing) {
			return errLedgerLost(streamName(cfg), 0, err)
		}
		return err
	}
	findings, _, err := eventstore.CheckStream(ctx, ll.read.Stream(), eventstore.StreamExpectations{})
	if err != nil {
		return err
	}
	if len(findings) > 0 {
		return errLedgerLost(streamName(cfg), 0, errors.New(strings.Join(findings, "; ")))
	}
	dir := projectionDir(cfg.DataDir)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("drop projection: %w", err)
	}
	proj, err := projections.Open(dir, ring, log, nil, projections.WithBlockCache(256<<20))
	if err != nil {
		return err
	}
	start := time.Now()
	lastPrint := time.Time{}
	err = proj.CatchUp(ctx, ll.read, func(applied, target uint64) {
		if time.Since(lastPrint) < 500*time.Millisecond && applied < target {
			return
		}
		lastPrint = time.Now()
		pct := 100.0
		if target > 0 {
			pct = 100 * float64(applied) / float64(target)
		}
		fmt.Fprintf(out, "rebuild: %d/%d events (%.1f%%)\n", applied, target, pct)
	})
	if err != nil {
		proj.Close()
		if errors.Is(err, eventstore.ErrStreamTampered) {
			return errLedgerLost(streamName(cfg), proj.Applied(), err)
		}
		return fmt.Errorf("rebuild: %w", err)
	}
	elapsed := time.Since(start)
	applied := proj.Applied()
	digest, derr := proj.Digest()
	_, rejected, rerr := proj.Rejected(1)
	if err := errors.Join(derr, rerr, proj.Close()); err != nil {
		return err
	}
	rate := float64(applied) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(out, "rebuild: done, %d events in %s (%.0f events/s), every one checked (hash, chain, MAC)\n", applied, elapsed.Round(time.Millisecond), rate)
	if rejected > 0 {
		fmt.Fprintf(out, "rebuild: %d messages rejected (see ledger audit verify)\n", rejected)
	}
	fmt.Fprintf(out, "rebuild: state digest %s at seq %d\n", digest, applied)
	return nil
}
