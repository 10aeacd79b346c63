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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/datakeys"
	"github.com/sessionledger/ledger/eventstore/natsauth"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/httpapi"
	"github.com/sessionledger/ledger/handlers/ports"
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
	// MasterKeyFile wraps the users' data keys (PEM, 0600); default
	// <data-dir>/master.key, created at a new ledger's first start. Every
	// instance sharing a ledger needs the same one (datakeys.go).
	MasterKeyFile string
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
	// UseSpread paces the use recorder (query.UseRecorderConfig.Spread):
	// 0 is defaultUseSpread, negative records uses unpaced.
	UseSpread      time.Duration
	PasswordParams argon2id.Params
	Now            func() time.Time
	Logger         *slog.Logger
	// AdminKey is the audit API key itself (LEDGER_ADMIN_KEY) and
	// AdminKeyFile a file holding it (mode 0600); at most one of them, of
	// at least 32 characters. Neither: <data-dir>/admin-key, generated at
	// the first start. Only the key's hash is kept (adminkey.go).
	AdminKey     string
	AdminKeyFile string
	// RequireAppKey: signup and login take only requests with a
	// registered app's key (X-API-Key: pk_live_…).
	RequireAppKey bool
	// Per client address (ratelimit.go in handlers/httpapi): X-Forwarded-For
	// is read only from peers in TrustedProxies (CIDRs); credential routes
	// take a token each from a bucket of AddressBurst refilled at
	// AddressRate per second; wrong admin keys from one of
	// AdminFailureBurst refilled at AdminFailureRate; at most
	// TrackedAddresses buckets per limit.
	TrustedProxies    []string
	AddressRate       float64
	AddressBurst      int
	TrackedAddresses  int
	AdminFailureRate  float64
	AdminFailureBurst int
	// MaxLag: past it without confirming it is caught up, validate fails
	// closed (503 PROJECTION_BEHIND) and /readyz fails. Default 5s.
	MaxLag time.Duration
	// MinSeqWait bounds the wait for a validate's min_seq. Default 2s.
	MinSeqWait time.Duration
	// At most HashConcurrency argon2id runs at once, HashQueue callers
	// waiting at most HashWait; beyond, 503 BUSY.
	HashConcurrency int
	HashQueue       int
	HashWait        time.Duration
	// LoginThrottle slows password guessing per account (and per
	// unknown email); TallyEvery is how often the failed logins for
	// unknown emails are written, as one event. Default 1 min.
	LoginThrottle domain.LoginThrottle
	TallyEvery    time.Duration
	// FeedHeartbeat: how often an idle revocation feed sends a heartbeat
	// (httpapi's default when zero).
	FeedHeartbeat time.Duration
	// TarpitMax: the longest a refusal for load or guessing is held
	// before it is sent (httpapi's default, 1s, when zero; negative: none).
	TarpitMax time.Duration
	// MaxAPIKeysPerUser caps a user's personal API keys that are not
	// revoked; 0 is domain.DefaultMaxAPIKeysPerUser.
	MaxAPIKeysPerUser int
	// AuthzUnavailableStatus is /v1/authz's status when the ledger cannot
	// vouch for a token: 401 (default), 403 or 503.
	AuthzUnavailableStatus int
	// Notify is where emailed codes and links go (notify.go); none
	// configured, the email routes answer 503 EMAIL_NOT_CONFIGURED.
	Notify NotifyConfig
	// Challenges bound codes and links; zero: the defaults.
	Challenges domain.ChallengeRules
	// DataKeyCacheTTL is how long unwrapped data keys stay in memory: a
	// key erased on another instance stops working here within it.
	// Default datakeys.DefaultCacheTTL.
	DataKeyCacheTTL time.Duration
}

func projectionDir(dataDir string) string { return filepath.Join(dataDir, "projection") }

func newID() string { return eventstore.NewEventID() }

// application wires the command and query handlers to the adapters: the
// projection reads, the event store writes.
func application(proj *projections.Projection, store *eventstore.Store, secrets ports.Secrets, uses *query.UseRecorder, unknown *command.UnknownEmails, hasher *command.BoundedHasher, cfg ServiceConfig) (command.Handlers, query.Handlers, error) {
	users, err := command.NewUsers(proj, store, cfg.Now)
	if err != nil {
		return command.Handlers{}, query.Handlers{}, err
	}
	keys := domain.DefaultAPIKeyRules()
	keys.UseGranularity = cfg.UseGranularity
	if cfg.MaxAPIKeysPerUser > 0 {
		keys.MaxPerUser = cfg.MaxAPIKeysPerUser
	}
	commands, err := command.New(command.Deps{
		Users: users, Log: store, Hasher: hasher, Creds: proj, Policy: cfg.Policy, Now: cfg.Now, NewID: newID,
		Throttle: cfg.LoginThrottle, Unknown: unknown, APIKeys: keys, Secrets: secrets,
	})
	if err != nil {
		return command.Handlers{}, query.Handlers{}, err
	}
	queries, err := query.New(query.Deps{Sessions: proj, Uses: uses, Log: store, Now: cfg.Now, Revocations: proj, APIKeys: proj, Secrets: secrets})
	return commands, queries, err
}

// lifecycleApplication wires password change, reset and email codes.
func lifecycleApplication(proj *projections.Projection, store *eventstore.Store, unknown *command.UnknownEmails, hasher *command.BoundedHasher, ring *domain.Keyring, n *notifier, cfg ServiceConfig) (command.LifecycleHandlers, error) {
	users, err := command.NewUsers(proj, store, cfg.Now)
	if err != nil {
		return command.LifecycleHandlers{}, err
	}
	d := command.LifecycleDeps{
		Deps: command.Deps{Users: users, Log: store, Hasher: hasher, Creds: proj, Policy: cfg.Policy, Now: cfg.Now, NewID: newID,
			Throttle: cfg.LoginThrottle, Unknown: unknown},
		Keys: challengeKeys{active: proj.SigningKey, ring: ring}, Challenges: proj, Rules: cfg.Challenges,
	}
	if n != nil {
		d.Notifier = n
	}
	return command.NewLifecycle(d)
}

// adminApplication wires the admin commands and the key checks.
func adminApplication(proj *projections.Projection, store *eventstore.Store, secrets ports.Secrets, cfg ServiceConfig) (command.AdminHandlers, query.AccessHandler, error) {
	users, err := command.NewUsers(proj, store, cfg.Now)
	if err != nil {
		return command.AdminHandlers{}, query.AccessHandler{}, err
	}
	admin, err := command.NewAdmin(command.AdminDeps{
		Users: users, Registry: proj, Log: store, Owners: proj, Now: cfg.Now, NewID: newID, Secrets: secrets,
	})
	if err != nil {
		return command.AdminHandlers{}, query.AccessHandler{}, err
	}
	access, err := query.NewAccess(proj)
	return admin, access, err
}

// Service is a running ledger instance.
type Service struct {
	log      *slog.Logger
	ll       *ledgerLog
	proj     *projections.Projection
	secrets  *datakeys.Store // the users' data keys (ports.Secrets)
	fresh    *projections.Freshness
	integ    *projections.Integrity
	uses     *query.UseRecorder
	stopUses context.CancelFunc
	// unknown tallies failed logins for unknown emails; stopUnknown
	// writes the last tally, while the log is still open.
	unknown     *command.UnknownEmails
	stopUnknown func()
	// notify delivers codes and links; nil if none is configured.
	notify   *notifier
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
	// A configured admin key is checked before anything starts.
	adminKey, adminKeyFrom, adminKeySet, err := configuredAdminKey(cfg)
	if err != nil {
		return nil, err
	}
	trusted, err := httpapi.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
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
	var layout *projections.LayoutError
	switch s.proj, err = projections.Open(projectionDir(cfg.DataDir), ring, log, reg); {
	case errors.As(err, &layout), errors.Is(err, projections.ErrInterruptedRebuild):
		// Written by an older version under another key layout, or a
		// rebuild that did not finish: rebuild it from the stream, which
		// must hold what it had applied.
		var applied uint64
		if layout != nil {
			applied = layout.Applied
		}
		if err := s.ll.openStore(ctx, cfg.LogConfig, false); err != nil {
			if errors.Is(err, eventstore.ErrStreamMissing) {
				return nil, errLedgerLost(streamName(cfg.LogConfig), applied, err)
			}
			return nil, err
		}
		if layout != nil {
			log.Warn("the projection has an older key layout; rebuilding it from the stream", "layout", layout.Found, "want", layout.Want, "applied", layout.Applied)
		} else {
			log.Warn("the projection is an interrupted rebuild; rebuilding it from the stream")
		}
		if err := rebuildProjection(ctx, s.ll, cfg.LogConfig, ring, io.Discard, log); err != nil {
			if layout == nil {
				return nil, fmt.Errorf("rebuild interrupted projection: %w", err)
			}
			return nil, fmt.Errorf("rebuild projection of layout %d: %w", layout.Found, err)
		}
		if s.proj, err = projections.Open(projectionDir(cfg.DataDir), ring, log, reg); err != nil {
			return nil, err
		}
		log.Info("projection rebuilt", "applied", s.proj.Applied())
	case err != nil:
		return nil, err
	default:
		if err := s.ll.openStore(ctx, cfg.LogConfig, s.proj.Applied() == 0); err != nil {
			if errors.Is(err, eventstore.ErrStreamMissing) {
				return nil, errLedgerLost(streamName(cfg.LogConfig), s.proj.Applied(), err)
			}
			return nil, err
		}
	}
	// The users' data keys: after the signing key, so that a start
	// against someone else's ledger is refused for that first.
	if s.secrets, err = openSecrets(ctx, s.ll, cfg.LogConfig, cfg.DataKeyCacheTTL, true, log); err != nil {
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
		Read: s.ll.read, Origin: s.ll.store.Reader, Every: integrityEvery(cfg.MaxLag), Registerer: reg, Log: log,
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

	argon, err := command.NewArgon2id(cfg.PasswordParams, cfg.HashConcurrency)
	if err != nil {
		return nil, err
	}
	hasher, err := command.NewBoundedHasher(argon, cfg.HashConcurrency, cfg.HashQueue, cfg.HashWait)
	if err != nil {
		return nil, err
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ledger_password_checks_refused_total", Help: "Password hashes and checks refused (503 BUSY) because --hash-concurrency and --hash-queue were full."},
		func() float64 { return float64(hasher.Refused()) }))
	// With the HTTP latency of logins, these tell how much of a login is its
	// password hash and how much is everything else.
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ledger_password_hashes_total", Help: "Password hashes and checks run (argon2id), unknown-email burns included."},
		func() float64 { n, _ := hasher.Hashing(); return float64(n) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ledger_password_hash_seconds_total", Help: "Time spent inside password hashes and checks, waiting for a slot excluded."},
		func() float64 { _, d := hasher.Hashing(); return d.Seconds() }))
	if !adminKeySet {
		if adminKey, adminKeyFrom, err = dataDirAdminKey(cfg.DataDir, log); err != nil {
			return nil, err
		}
	}
	log.Info("bootstrap admin key (every scope)", "from", adminKeyFrom)
	if s.uses, err = query.NewUseRecorder(query.UseRecorderConfig{
		Granularity: cfg.UseGranularity, QueueSize: cfg.UseQueueSize, Spread: cfg.UseSpread,
		Log: s.ll.store, Logger: log, Registerer: reg,
	}); err != nil {
		return nil, err
	}
	usesCtx, usesCancel := context.WithCancel(context.Background())
	go s.uses.Run(usesCtx)
	s.stopUses = usesCancel

	if s.unknown, err = command.NewUnknownEmails(cfg.LoginThrottle, command.DefaultUnknownEmails, s.ll.store, cfg.Now); err != nil {
		return nil, err
	}
	s.stopUnknown = s.runTally(cfg.TallyEvery)

	commands, queries, err := application(s.proj, s.ll.store, s.secrets, s.uses, s.unknown, hasher, cfg)
	if err != nil {
		return nil, err
	}
	admin, access, err := adminApplication(s.proj, s.ll.store, s.secrets, cfg)
	if err != nil {
		return nil, err
	}
	if s.notify, err = newNotifier(cfg.Notify, log, reg); err != nil {
		return nil, err
	}
	lifecycle, err := lifecycleApplication(s.proj, s.ll.store, s.unknown, hasher, ring, s.notify, cfg)
	if err != nil {
		return nil, err
	}
	api := httpapi.New(httpapi.Config{
		Commands:      commands,
		Lifecycle:     lifecycle,
		Queries:       queries,
		Admin:         admin,
		Access:        access,
		RequireAppKey: cfg.RequireAppKey,
		AdminKey:      &adminKey,
		Digests:       s.digests,
		Ready:         s.ready,
		Freshness:     s.fresh,
		Metrics:       promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Log:           log,
		Registerer:    reg,
		FeedHeartbeat: cfg.FeedHeartbeat,
		TarpitMax:     cfg.TarpitMax,
		Limits: httpapi.Limits{
			TrustedProxies:   trusted,
			Credentials:      httpapi.AddressLimit{Rate: cfg.AddressRate, Burst: cfg.AddressBurst},
			AdminFailures:    httpapi.AddressLimit{Rate: cfg.AdminFailureRate, Burst: cfg.AdminFailureBurst},
			TrackedAddresses: cfg.TrackedAddresses,
		},
		AuthzUnavailableStatus: cfg.AuthzUnavailableStatus,
	})
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http listen: %w", err)
	}
	s.addr = ln.Addr().String()
	s.srv = httpapi.NewServer(api.Handler(), slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	// Listener: the errors net/http writes itself (431, a malformed request)
	// speak JSON too.
	go func() { s.serveErr <- s.srv.Serve(httpapi.Listener(ln)) }()
	log.Info("ledger serving", "http", s.addr, "applied", s.proj.Applied(), "stream", s.ll.store.StreamName())
	return s, nil
}

// runTally writes the unknown-email tally every interval; the function it
// returns stops that and writes the last tally.
func (s *Service) runTally(every time.Duration) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	onError := func(err error) { s.log.Error("failed logins for unknown emails not written", "err", err) }
	go func() {
		defer close(done)
		s.unknown.Run(ctx, every, onError)
	}()
	return func() {
		cancel()
		<-done
		fctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		if err := s.unknown.Flush(fctx); err != nil {
			onError(err)
		}
	}
}

// URL is the base URL of the API.
func (s *Service) URL() string { return "http://" + s.addr }

// ServeErr reports the HTTP server stopping on its own.
func (s *Service) ServeErr() <-chan error { return s.serveErr }

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
		if s.stopUnknown != nil {
			s.stopUnknown()
		}
		if s.notify != nil {
			s.notify.Close(ctx)
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
