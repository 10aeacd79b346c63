// Command ledger is the session ledger: one binary that serves the API
// (`ledger serve`) and maintains its projection (`ledger rebuild`). Every
// flag can also be set through a LEDGER_* environment variable.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore/natsauth"
	"github.com/sessionledger/ledger/handlers/command"
)

type logFlags struct {
	DataDir        string `name:"data-dir" default:"${default_data_dir}" env:"LEDGER_DATA_DIR" help:"Directory for the embedded JetStream store (nats/) and the Pebble projection (projection/)."`
	NATSURL        string `name:"nats-url" env:"LEDGER_NATS_URL" help:"Use an external NATS/JetStream (comma-separated URLs) instead of the embedded server. The cluster must run with sync_interval: always."`
	NATSListen     string `name:"nats-listen" env:"LEDGER_NATS_LISTEN" placeholder:"HOST:PORT" help:"Let other processes (replicas, the nats CLI) connect to the embedded NATS server at this address. Off by default."`
	NATSNoSync     bool   `name:"nats-no-sync" env:"LEDGER_NATS_NO_SYNC" help:"Embedded server only: do not fsync every write before acknowledging it. Faster, but a power cut can lose acknowledged events (e.g. a logout)."`
	Stream         string `name:"stream" default:"${default_stream}" env:"LEDGER_STREAM" help:"JetStream stream name."`
	StreamReplicas int    `name:"stream-replicas" default:"0" env:"LEDGER_STREAM_REPLICAS" help:"Replicas when the stream is created. 0 (default) picks: 1 for the embedded server or a standalone nats-server, 3 when --nats-url reaches a cluster."`
	SigningKeyFile string `name:"signing-key" env:"LEDGER_SIGNING_KEY_FILE" placeholder:"FILE" help:"The ledger's signing key ring (PEM, mode 0600). Every instance writing to one ledger needs the same file. Default: <data-dir>/signing.key, created at a new ledger's first start."`
	MasterKeyFile  string `name:"master-key-file" env:"LEDGER_MASTER_KEY_FILE" placeholder:"FILE" help:"The master key (PEM, mode 0600) that wraps every user's data key (the sealed emails and secrets; erasure destroys a user's). Every instance sharing a ledger needs the same file. Default: <data-dir>/master.key, created at a new ledger's first start."`
	readFlags
	natsAuthFlags
}

func (f logFlags) config() LogConfig {
	return LogConfig{DataDir: f.DataDir, NATSURL: f.NATSURL, NATSListen: f.NATSListen, NoSync: f.NATSNoSync, Stream: f.Stream, StreamReplicas: f.StreamReplicas,
		ReadStream: f.ReadStream, ReadStreamCluster: f.ReadStreamCluster, SigningKeyFile: f.SigningKeyFile, MasterKeyFile: f.MasterKeyFile,
		NATS: natsauth.ClientConfig{NkeyFile: f.NkeyFile, CredsFile: f.CredsFile, TLSCA: f.TLSCA, TLSCert: f.TLSCert, TLSKey: f.TLSKey}}
}

// natsAuthFlags authenticate to an external NATS (--nats-url).
type natsAuthFlags struct {
	NkeyFile  string `name:"nats-nkey" env:"LEDGER_NATS_NKEY" placeholder:"FILE" help:"Authenticate to --nats-url with this nkey seed file (e.g. another instance's <data-dir>/nats/writer.nk)."`
	CredsFile string `name:"nats-creds" env:"LEDGER_NATS_CREDS" placeholder:"FILE" help:"Authenticate to --nats-url with this decentralized-auth .creds file (JWT and nkey seed)."`
	TLSCA     string `name:"nats-tls-ca" env:"LEDGER_NATS_TLS_CA" placeholder:"FILE" help:"CA certificates (PEM) to verify the NATS servers with."`
	TLSCert   string `name:"nats-tls-cert" env:"LEDGER_NATS_TLS_CERT" placeholder:"FILE" help:"Client certificate (PEM) for NATS servers that require mutual TLS."`
	TLSKey    string `name:"nats-tls-key" env:"LEDGER_NATS_TLS_KEY" placeholder:"FILE" help:"Key (PEM) of --nats-tls-cert."`
}

type outputFlags struct {
	LogLevel  string `name:"log-level" default:"info" enum:"debug,info,warn,error" env:"LEDGER_LOG_LEVEL" help:"Log level: debug, info, warn, error."`
	LogFormat string `name:"log-format" default:"text" enum:"text,json" env:"LEDGER_LOG_FORMAT" help:"Log format: text or json."`
}

func (f outputFlags) logger() *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(f.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if f.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

type serveCmd struct {
	logFlags
	outputFlags
	HTTP               string        `name:"http" default:"${default_http}" env:"LEDGER_HTTP" help:"HTTP listen address."`
	AdminKeyFile       string        `name:"admin-key-file" env:"LEDGER_ADMIN_KEY_FILE" placeholder:"FILE" help:"File (mode 0600) holding the audit API key (X-API-Key), at least 32 characters. Or set the key itself in LEDGER_ADMIN_KEY (there is no flag for it: flags show in the process list). Neither: one is generated at the first start into <data-dir>/admin-key."`
	RequireAppKey      bool          `name:"require-app-key" env:"LEDGER_REQUIRE_APP_KEY" help:"Signup and login need the key of a registered app in X-API-Key (pk_live_…; POST /v1/admin/apps); otherwise 401 APP_KEY_INVALID."`
	UseGranularity     time.Duration `name:"use-granularity" default:"${default_use_granularity}" env:"LEDGER_USE_GRANULARITY" help:"Record at most one session_used event per session per this interval."`
	UseQueue           int           `name:"use-queue" default:"${default_use_queue}" env:"LEDGER_USE_QUEUE" help:"Uses waiting to be appended; beyond this they are dropped and counted."`
	UseSpread          time.Duration `name:"use-spread" default:"${default_use_spread}" env:"LEDGER_USE_SPREAD" help:"Pace the recording of uses: what is queued is appended at about queued/this uses a second (at least 100/s; unpaced once the queue is half full), so a burst of uses does not take the CPU validations need. 0: as fast as the log takes them."`
	MaxKeepLoggedIn    time.Duration `name:"max-keep-logged-in" default:"${default_max_keep_logged_in}" env:"LEDGER_MAX_KEEP_LOGGED_IN" help:"Max session lifetime with keep_logged_in (365 days)."`
	MaxSession         time.Duration `name:"max-session" default:"${default_max_session}" env:"LEDGER_MAX_SESSION" help:"Max session lifetime without keep_logged_in."`
	MaxMFAKeepLoggedIn time.Duration `name:"max-mfa-keep-logged-in" default:"${default_max_mfa_keep_logged_in}" env:"LEDGER_MAX_MFA_KEEP_LOGGED_IN" help:"Max lifetime of a 2FA session with keep_logged_in (30 days)."`
	MaxMFASession      time.Duration `name:"max-mfa-session" default:"${default_max_mfa_session}" env:"LEDGER_MAX_MFA_SESSION" help:"Max lifetime of a 2FA session without keep_logged_in."`
	IdleWindow         time.Duration `name:"idle-window" default:"${default_idle_window}" env:"LEDGER_IDLE_WINDOW" help:"A session unused this long expires (30 days)."`
	MaxSessionsPerUser int           `name:"max-sessions-per-user" default:"${default_max_sessions_per_user}" env:"LEDGER_MAX_SESSIONS_PER_USER" help:"Live sessions a user may hold (at least 1): a login beyond it revokes the user's oldest live sessions (revoked:session_limit)."`
	HashConcurrency    int           `name:"hash-concurrency" default:"${default_hash_concurrency}" env:"LEDGER_HASH_CONCURRENCY" help:"At most this many argon2id password hashes at once (19 MiB each); default: the number of cores."`
	HashQueue          int           `name:"hash-queue" default:"${default_hash_queue}" env:"LEDGER_HASH_QUEUE" help:"At most this many password checks wait for a slot, each at most --hash-wait; beyond, 503 BUSY with Retry-After."`
	HashWait           time.Duration `name:"hash-wait" default:"${default_hash_wait}" env:"LEDGER_HASH_WAIT" help:"How long a password check waits for a slot before 503 BUSY."`
	ThrottleAfter      int           `name:"login-throttle-after" default:"${default_throttle_after}" env:"LEDGER_LOGIN_THROTTLE_AFTER" help:"Failed logins in a row (each within --login-throttle-window of the last) before an account refuses logins (429 TOO_MANY_ATTEMPTS)."`
	ThrottleWindow     time.Duration `name:"login-throttle-window" default:"${default_throttle_window}" env:"LEDGER_LOGIN_THROTTLE_WINDOW" help:"A failed login this long after the previous one starts the count over."`
	ThrottleBase       time.Duration `name:"login-throttle-base" default:"${default_throttle_base}" env:"LEDGER_LOGIN_THROTTLE_BASE" help:"First throttle; each further failed login doubles it."`
	ThrottleMax        time.Duration `name:"login-throttle-max" default:"${default_throttle_max}" env:"LEDGER_LOGIN_THROTTLE_MAX" help:"Longest throttle."`
	DataKeyCacheTTL    time.Duration `name:"data-key-cache-ttl" default:"${default_data_key_cache_ttl}" env:"LEDGER_DATA_KEY_CACHE_TTL" help:"How long unwrapped user data keys stay in memory: after an erasure on another instance, the user's sealed data stays readable here at most this long."`
	ShutdownTimeout    time.Duration `name:"shutdown-timeout" default:"${default_shutdown_timeout}" env:"LEDGER_SHUTDOWN_TIMEOUT" help:"How long graceful shutdown waits for in-flight requests."`
	freshnessFlags
	addressFlags
	gatewayFlags
	notifyFlags
	TarpitMax      time.Duration `name:"tarpit-max" default:"${default_tarpit_max}" env:"LEDGER_TARPIT_MAX" help:"Hold a refusal for load or guessing (429, 503 BUSY) up to this long (its Retry-After, at most this) before sending it, so a client that retries at once makes about one attempt a second per connection. 0: do not hold."`
	MemoryLimitMiB int64         `name:"memory-limit-mib" default:"${default_memory_limit_mib}" env:"LEDGER_MEMORY_LIMIT_MIB" help:"Soft memory limit for the Go runtime (GOMEMLIMIT), in MiB: the garbage collector works harder as the heap nears it, so the garbage of a burst of requests does not pile up as RSS. 0: none. An explicit GOMEMLIMIT wins."`
}

// addressFlags are the per-client-address limits.
type addressFlags struct {
	TrustedProxies   []string `name:"trusted-proxies" env:"LEDGER_TRUSTED_PROXIES" sep:"," placeholder:"CIDR" help:"Reverse proxies (CIDR prefixes or addresses) whose X-Forwarded-For is believed: the client is the rightmost address in it that is not one of them. Default: none; the TCP peer is the client."`
	AddressRate      float64  `name:"address-rate" default:"${default_address_rate}" env:"LEDGER_ADDRESS_RATE" help:"Signups and logins per second per client address (IPv6: per /64), after --address-burst; beyond, 429 RATE_LIMITED."`
	AddressBurst     int      `name:"address-burst" default:"${default_address_burst}" env:"LEDGER_ADDRESS_BURST" help:"Signups and logins one client address may make at once."`
	TrackedAddresses int      `name:"tracked-addresses" default:"${default_tracked_addresses}" env:"LEDGER_TRACKED_ADDRESSES" help:"Client addresses each per-address limit remembers (about 270 bytes each); the least recently seen are forgotten beyond."`
}

// notifyFlags are where emailed codes and links go (notify.go).
type notifyFlags struct {
	SMTPURL          string `name:"smtp-url" env:"LEDGER_SMTP_URL" placeholder:"URL" help:"Send codes and links by SMTP: smtp://[user:pass@]host[:587] (STARTTLS required; ?starttls=optional or off to relax) or smtps://host[:465] (implicit TLS). Credentials may instead come from LEDGER_SMTP_USERNAME and LEDGER_SMTP_PASSWORD."`
	SMTPCAFile       string `name:"smtp-ca-file" env:"LEDGER_SMTP_CA_FILE" placeholder:"FILE" help:"CA certificates (PEM) to verify the SMTP server's certificate with, instead of the system's (a private CA or a self-signed server)."`
	SMTPFrom         string `name:"smtp-from" env:"LEDGER_SMTP_FROM" placeholder:"ADDRESS" help:"From address of the messages (needed with --smtp-url)."`
	MailTemplates    string `name:"mail-templates" env:"LEDGER_MAIL_TEMPLATES" placeholder:"DIR" help:"Directory of password_reset.txt and login.txt (Go text/template; first line the subject) overriding the built-in messages."`
	NotifyWebhook    string `name:"notify-webhook" env:"LEDGER_NOTIFY_WEBHOOK" placeholder:"URL" help:"POST every code and link as JSON to this URL (for apps that send their own mail), signed: X-Ledger-Signature: sha256=<HMAC-SHA256 of the body>."`
	NotifyWebhookKey string `name:"notify-webhook-secret-file" env:"LEDGER_NOTIFY_WEBHOOK_SECRET_FILE" placeholder:"FILE" help:"File (mode 0600, at least 16 bytes) holding the webhook's HMAC key."`
	DevPrintCodes    bool   `name:"dev-print-codes" env:"LEDGER_DEV_PRINT_CODES" help:"Development only: print codes and links to stderr. Refused unless --http is a loopback address."`
	LinkURL          string `name:"link-url" env:"LEDGER_LINK_URL" placeholder:"URL" help:"Where emailed links point (your app's page): URL?token=<token>; the page POSTs the token to /v1/auth/password/reset or /v1/auth/magic. Unset: messages carry the code only."`
}

// smtpPasswordEnv is the only way to give the SMTP password apart from the
// URL; like the admin key, it is removed from the environment once read.
const smtpPasswordEnv = "LEDGER_SMTP_PASSWORD"

func (f notifyFlags) notifyConfig(smtpPassword string) NotifyConfig {
	return NotifyConfig{SMTPURL: f.SMTPURL, SMTPFrom: f.SMTPFrom, SMTPUsername: os.Getenv("LEDGER_SMTP_USERNAME"), SMTPPassword: smtpPassword, SMTPCAFile: f.SMTPCAFile,
		MailTemplates: f.MailTemplates, Webhook: f.NotifyWebhook, WebhookSecretFile: f.NotifyWebhookKey, DevPrintCodes: f.DevPrintCodes, LinkURL: f.LinkURL}
}

// adminKeyEnv is the only way to give the admin key itself: a flag would
// show in the process list.
const adminKeyEnv = "LEDGER_ADMIN_KEY"

func (c *serveCmd) Run() error {
	log := c.logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	applyMemoryLimit(c.MemoryLimitMiB, log)
	adminKey := os.Getenv(adminKeyEnv)
	_ = os.Unsetenv(adminKeyEnv) // from here on only its hash is kept
	smtpPassword := os.Getenv(smtpPasswordEnv)
	_ = os.Unsetenv(smtpPasswordEnv) // from here on only the SMTP sender holds it
	svc, err := StartService(ctx, ServiceConfig{
		LogConfig: c.config(),
		HTTPAddr:  c.HTTP,
		Policy: domain.Policy{
			MaxKeepLoggedIn: c.MaxKeepLoggedIn, MaxSession: c.MaxSession,
			MaxMFAKeepLoggedIn: c.MaxMFAKeepLoggedIn, MaxMFASession: c.MaxMFASession,
			IdleWindow: c.IdleWindow, MaxSessionsPerUser: c.MaxSessionsPerUser,
		},
		UseGranularity:   c.UseGranularity,
		UseQueueSize:     c.UseQueue,
		UseSpread:        spreadFlag(c.UseSpread),
		PasswordParams:   command.OWASPParams,
		Logger:           log,
		AdminKey:         adminKey,
		AdminKeyFile:     c.AdminKeyFile,
		RequireAppKey:    c.RequireAppKey,
		TrustedProxies:   c.TrustedProxies,
		AddressRate:      c.AddressRate,
		AddressBurst:     c.AddressBurst,
		TrackedAddresses: c.TrackedAddresses,
		MaxLag:           c.MaxLag,
		MinSeqWait:       c.MinSeqWait,
		HashConcurrency:  c.HashConcurrency,
		HashQueue:        c.HashQueue,
		HashWait:         c.HashWait,
		TarpitMax:        tarpitFlag(c.TarpitMax),
		LoginThrottle: domain.LoginThrottle{
			After: c.ThrottleAfter, Window: c.ThrottleWindow, Base: c.ThrottleBase, Max: c.ThrottleMax,
		},

		AuthzUnavailableStatus: c.AuthzUnavailableStatus,
		Notify:                 c.notifyConfig(smtpPassword),
		DataKeyCacheTTL:        c.DataKeyCacheTTL,
	})
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-svc.ServeErr():
		log.Error("http server stopped", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	return svc.Close(sctx)
}

type rebuildCmd struct {
	logFlags
	outputFlags
	CPUProfile     string `name:"cpu-profile" placeholder:"FILE" type:"path" help:"Write a CPU profile of the whole rebuild to FILE (go tool pprof)."`
	MemoryLimitMiB int64  `name:"memory-limit-mib" default:"${default_rebuild_memory_limit_mib}" env:"LEDGER_REBUILD_MEMORY_LIMIT_MIB" help:"Soft memory limit for the Go runtime (GOMEMLIMIT) during the rebuild, in MiB: the garbage collector works harder as the heap nears it, instead of letting garbage grow the heap to twice what is live. 0: none. An explicit GOMEMLIMIT wins."`
}

func (c *rebuildCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	applyMemoryLimit(c.MemoryLimitMiB, c.logger())
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return rebuild(ctx, c.config(), os.Stderr, c.logger())
}

type cli struct {
	Config configFlag `name:"config" placeholder:"FILE" type:"path" help:"YAML file of flag values, one section per command (serve: {http: …, max-lag: …}). Flags win over LEDGER_* variables, which win over the file."`

	Serve   serveCmd   `cmd:"" help:"Run the ledger: embedded (or external) NATS JetStream, the Pebble projection and the HTTP API."`
	Rebuild rebuildCmd `cmd:"" help:"Drop the projection and replay the whole stream into a new one. Stop the server on this data dir first."`
	Audit   auditCmd   `cmd:"" help:"Auditor's tools: as-of verdicts, history, export, chain verification, digests."`
	Keys    keysCmd    `cmd:"" help:"The ledger's keys: signing keys (public, generate, rotate) and service keys for X-API-Key (create, list, revoke)."`
	Users   usersCmd   `cmd:"" help:"Users: roles (set-role), e.g. to make the first admin."`
	// DevCluster is what scripts/cluster runs.
	DevCluster devClusterCmd `cmd:"" name:"dev-cluster" hidden:"" help:"Run a local 3-node NATS cluster and several ledger instances on loopback, for trying replicas out."`
}

func main() {
	var c cli
	k := kong.Parse(&c,
		kong.Name("ledger"),
		kong.Description("Session ledger: an event-sourced session authority on NATS JetStream and Pebble."),
		kong.UsageOnError(),
		flagDefaults(),
	)
	if err := k.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "ledger:", err)
		os.Exit(1)
	}
}
