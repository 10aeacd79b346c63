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
	"sync"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
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
	read   *eventstore.Store // the projection's source: store, or a mirror of it
	dial   func() (*nats.Conn, error)
	unlock func()
}

// openLog connects to the ledger stream. The data dir is locked for as long
// as the log is open when the embedded server keeps its files there, or when
// the caller says it will use the projection there too.
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
		emb, err := eventstore.StartEmbedded(eventstore.EmbeddedConfig{
			Dir:        filepath.Join(cfg.DataDir, "nats"),
			Listen:     cfg.NATSListen,
			SyncAlways: !cfg.NoSync,
		})
		if err != nil {
			return nil, err
		}
		l.emb = emb
		l.dial = func() (*nats.Conn, error) { return emb.Connect("ledger") }
		if cfg.NATSListen != "" {
			log.Info("embedded NATS accepts connections", "url", emb.ClientURL())
		}
	} else {
		urls := cfg.NATSURL
		l.dial = func() (*nats.Conn, error) {
			nc, err := nats.Connect(urls, nats.Name("ledger"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
			if err != nil {
				return nil, fmt.Errorf("connect %s: %w", urls, err)
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
	replicas := streamReplicas(cfg, nc)
	l.store, err = eventstore.Open(ctx, nc, eventstore.Config{Stream: cfg.Stream, Replicas: replicas})
	if err == nil {
		err = l.openReadStream(ctx, cfg, replicas, log)
	}
	if err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func (l *ledgerLog) close() {
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

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// Service is a running ledger instance.
type Service struct {
	log      *slog.Logger
	ll       *ledgerLog
	proj     *projections.Projection
	fresh    *projections.Freshness
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Policy.Validate(); err != nil {
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
	s.ll.store.RegisterMetrics(reg)
	if s.proj, err = projections.Open(projectionDir(cfg.DataDir), log, reg); err != nil {
		return nil, err
	}
	log.Info("catching up projection", "applied", s.proj.Applied())
	if err := s.proj.CatchUp(ctx, s.ll.read, nil); err != nil {
		return nil, fmt.Errorf("projection catch-up: %w", err)
	}

	bgCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
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
	s.uses = query.NewUseRecorder(query.UseRecorderConfig{
		Granularity: cfg.UseGranularity, QueueSize: cfg.UseQueueSize,
		Log: s.ll.store, Versions: s.proj, NewID: newID, Logger: log, Registerer: reg,
	})
	usesCtx, usesCancel := context.WithCancel(context.Background())
	go s.uses.Run(usesCtx)
	s.stopUses = usesCancel

	deps := command.Deps{
		Users:  command.NewUsers(s.proj, s.ll.store, newID),
		Log:    s.ll.store,
		Hasher: hasher,
		Creds:  s.proj,
		Policy: cfg.Policy,
		Now:    cfg.Now,
		NewID:  newID,
	}
	api := httpapi.New(httpapi.Config{
		Signup:       command.SignupHandler{Deps: deps},
		Login:        command.LoginHandler{Deps: deps},
		Logout:       command.LogoutHandler{Deps: deps},
		LogoutOthers: command.LogoutOthersHandler{Deps: deps},
		Terminate:    command.TerminateHandler{Deps: deps},
		Validate:     query.ValidateHandler{Sessions: s.proj, Uses: s.uses, Now: cfg.Now},
		Sessions:     query.SessionsHandler{Sessions: s.proj, Now: cfg.Now},
		Audit:        query.AuditHandler{Sessions: s.proj, Log: s.ll.store},
		AdminKey:     &adminKey,
		Digests:      s.digests,
		Ready:        s.ready,
		Freshness:    s.fresh,
		Metrics:      promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Log:          log,
		Registerer:   reg,
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

func (s *Service) ready(ctx context.Context) (map[string]any, error) {
	detail := s.fresh.Status() // lag, fresh_as_of; overwritten below where newer
	if err := s.fresh.Check(); err != nil {
		return detail, err
	}
	last, err := s.ll.store.LastSeq(ctx)
	if err != nil {
		return detail, fmt.Errorf("jetstream unreachable: %w", err)
	}
	detail["stream_last_seq"] = last
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := s.proj.WaitFor(wctx, last); err != nil {
		detail["lag"] = last - s.proj.Applied()
		return detail, errors.New("projection is behind the stream")
	}
	detail["applied_seq"] = s.proj.Applied()
	detail["lag"] = 0
	// A message the projection could not apply cannot be repaired (the log
	// is immutable), so the instance stays ready but says so.
	if skipped, err := s.proj.Skipped(); err == nil && len(skipped) > 0 {
		detail["skipped_events"] = skipped
		detail["degraded"] = true
	}
	return detail, nil
}

func (s *Service) digests() (map[string]any, error) {
	return projectionDigests(s.proj)
}

// projectionDigests is what `ledger audit digest` and GET /v1/audit/digest
// report: the state digest (equal for equal applied sequences, live or
// rebuilt) and the stream digest checkpoints to pin.
func projectionDigests(p *projections.Projection) (map[string]any, error) {
	state, applied, err := p.DigestAt()
	if err != nil {
		return nil, err
	}
	stream, _ := p.StreamDigest()
	cps, err := p.DigestCheckpoints()
	if err != nil {
		return nil, err
	}
	checkpoints := make([]map[string]any, 0, len(cps))
	for _, c := range cps {
		checkpoints = append(checkpoints, map[string]any{"seq": c.Seq, "stream_digest": c.Digest.String()})
	}
	skipped, err := p.Skipped()
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"applied_seq": applied, "state_digest": state, "stream_digest": stream.String(),
		"checkpoints": checkpoints, "skipped_events": skipped,
	}, nil
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
// one, printing progress to out.
func rebuild(ctx context.Context, cfg LogConfig, out io.Writer, log *slog.Logger) error {
	ll, err := openLog(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer ll.close()
	dir := projectionDir(cfg.DataDir)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("drop projection: %w", err)
	}
	proj, err := projections.Open(dir, log, nil, projections.WithBlockCache(256<<20))
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
		return fmt.Errorf("rebuild: %w", err)
	}
	elapsed := time.Since(start)
	applied := proj.Applied()
	digest, derr := proj.Digest()
	if err := errors.Join(derr, proj.Close()); err != nil {
		return err
	}
	rate := float64(applied) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(out, "rebuild: done, %d events in %s (%.0f events/s)\n", applied, elapsed.Round(time.Millisecond), rate)
	fmt.Fprintf(out, "rebuild: state digest %s at seq %d\n", digest, applied)
	return nil
}
