package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/alecthomas/kong"
	kongyaml "github.com/alecthomas/kong-yaml"
	"github.com/alexedwards/argon2id"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore/datakeys"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/httpapi"
	"gopkg.in/yaml.v3"
)

// Defaults of the service, in one place: EnsureDefaults fills a
// ServiceConfig's zero fields from them, the flags' default tags are
// interpolated from them (flagDefaults), and tests and the dev cluster start
// from them.
const (
	defaultDataDir        = "./data"
	defaultStream         = "LEDGER"
	defaultHTTP           = "127.0.0.1:8080"
	defaultUseGranularity = time.Hour
	defaultUseQueue       = 65536
	// A burst of uses is recorded over about this long (see
	// query.UseRecorder): a use slides an idle deadline of days.
	defaultUseSpread       = 30 * time.Second
	defaultMaxLag          = 5 * time.Second
	defaultMinSeqWait      = 2 * time.Second
	defaultShutdownTimeout = 15 * time.Second
	// Password checks wait at most this long for a free slot.
	defaultHashWait = 2 * time.Second
	// The Go runtime's soft memory limit (see applyMemoryLimit).
	defaultMemoryLimitMiB = 256
	// ledger rebuild's: what is live there is a bounded filter and cache,
	// the batches in flight and the embedded NATS server's index of the
	// stream; Pebble's memtables and block cache are outside the Go heap.
	defaultRebuildMemoryLimitMiB = 192
	// audit verify's soft memory limit: above what it keeps at 1M subjects
	// (about 200 MiB), so the collector does not run without end.
	defaultAuditMemoryLimitMiB = 320
	// Failed logins for unknown emails are written as one tally per
	// instance this often.
	defaultTallyEvery = time.Minute

	// Per client address (an IPv6 /64 counts as one), on signup and login:
	// 20 at once, then one a second. A person or an app logging its user in
	// needs a few; one address guessing passwords is slowed to a guess a
	// second, and many people behind one NAT still get 3600 logins an hour.
	defaultAddressRate  = 1.0 // per second
	defaultAddressBurst = 20
	// Wrong admin keys per address: 5, then one a minute.
	defaultAdminFailureRate  = 1.0 / 60
	defaultAdminFailureBurst = 5
	// Buckets remembered per limit (about 270 bytes each: 18 MiB at most).
	defaultTrackedAddresses = 65536
	// Unwrapped data keys stay in memory this long: a user erased on
	// another instance has their sealed data unreadable here within it.
	defaultDataKeyCacheTTL = datakeys.DefaultCacheTTL
)

// defaultHashConcurrency is one argon2id run per core: more only queue in
// the scheduler and multiply the 19 MiB each holds.
func defaultHashConcurrency() int { return runtime.NumCPU() }

// defaultHashQueue is a short queue: a burst is absorbed, a flood is
// refused at once instead of piling up memory and latency.
func defaultHashQueue() int { return 4 * runtime.NumCPU() }

// flagDefaults are the defaults as kong variables, for `default:"${…}"`.
func flagDefaults() kong.Vars {
	p := domain.DefaultPolicy()
	t := domain.DefaultLoginThrottle()
	return kong.Vars{
		"default_memory_limit_mib":         strconv.Itoa(defaultMemoryLimitMiB),
		"default_rebuild_memory_limit_mib": strconv.Itoa(defaultRebuildMemoryLimitMiB),
		"default_audit_memory_limit_mib":   strconv.Itoa(defaultAuditMemoryLimitMiB),
		"default_tarpit_max":               httpapi.DefaultTarpitMax.String(),
		"default_throttle_after":           strconv.Itoa(t.After),
		"default_throttle_window":          t.Window.String(),
		"default_throttle_base":            t.Base.String(),
		"default_throttle_max":             t.Max.String(),
		"default_data_dir":                 defaultDataDir,
		"default_stream":                   defaultStream,
		"default_http":                     defaultHTTP,
		"default_use_granularity":          defaultUseGranularity.String(),
		"default_use_queue":                strconv.Itoa(defaultUseQueue),
		"default_use_spread":               defaultUseSpread.String(),
		"default_max_lag":                  defaultMaxLag.String(),
		"default_min_seq_wait":             defaultMinSeqWait.String(),
		"default_shutdown_timeout":         defaultShutdownTimeout.String(),
		"default_max_keep_logged_in":       p.MaxKeepLoggedIn.String(),
		"default_max_session":              p.MaxSession.String(),
		"default_max_mfa_keep_logged_in":   p.MaxMFAKeepLoggedIn.String(),
		"default_max_mfa_session":          p.MaxMFASession.String(),
		"default_idle_window":              p.IdleWindow.String(),
		"default_max_sessions_per_user":    strconv.Itoa(p.MaxSessionsPerUser),
		"default_hash_concurrency":         strconv.Itoa(defaultHashConcurrency()),
		"default_hash_queue":               strconv.Itoa(defaultHashQueue()),
		"default_hash_wait":                defaultHashWait.String(),
		"default_address_rate":             strconv.FormatFloat(defaultAddressRate, 'g', -1, 64),
		"default_address_burst":            strconv.Itoa(defaultAddressBurst),
		"default_tracked_addresses":        strconv.Itoa(defaultTrackedAddresses),
		"default_data_key_cache_ttl":       defaultDataKeyCacheTTL.String(),

		"default_authz_unavailable_status": strconv.Itoa(httpapi.DefaultAuthzUnavailableStatus),
	}
}

// EnsureDefaults fills every zero field with its default.
func (c *ServiceConfig) EnsureDefaults() {
	if c.DataDir == "" {
		c.DataDir = defaultDataDir
	}
	if c.Stream == "" {
		c.Stream = defaultStream
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = defaultHTTP
	}
	if c.Policy == (domain.Policy{}) {
		c.Policy = domain.DefaultPolicy()
	}
	if c.LoginThrottle == (domain.LoginThrottle{}) {
		c.LoginThrottle = domain.DefaultLoginThrottle()
	}
	if c.TallyEvery == 0 {
		c.TallyEvery = defaultTallyEvery
	}
	if c.UseGranularity == 0 {
		c.UseGranularity = defaultUseGranularity
	}
	if c.UseQueueSize == 0 {
		c.UseQueueSize = defaultUseQueue
	}
	if c.UseSpread == 0 {
		c.UseSpread = defaultUseSpread
	}
	if c.PasswordParams == (argon2id.Params{}) {
		c.PasswordParams = command.OWASPParams
	}
	if c.MaxLag == 0 {
		c.MaxLag = defaultMaxLag
	}
	if c.MinSeqWait == 0 {
		c.MinSeqWait = defaultMinSeqWait
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HashConcurrency == 0 {
		c.HashConcurrency = defaultHashConcurrency()
	}
	if c.DataKeyCacheTTL == 0 {
		c.DataKeyCacheTTL = defaultDataKeyCacheTTL
	}
	if c.HashQueue == 0 {
		c.HashQueue = defaultHashQueue()
	}
	if c.HashWait == 0 {
		c.HashWait = defaultHashWait
	}
	if c.AddressRate == 0 {
		c.AddressRate = defaultAddressRate
	}
	if c.AddressBurst == 0 {
		c.AddressBurst = defaultAddressBurst
	}
	if c.AdminFailureRate == 0 {
		c.AdminFailureRate = defaultAdminFailureRate
	}
	if c.AdminFailureBurst == 0 {
		c.AdminFailureBurst = defaultAdminFailureBurst
	}
	if c.TrackedAddresses == 0 {
		c.TrackedAddresses = defaultTrackedAddresses
	}
	if c.AuthzUnavailableStatus == 0 {
		c.AuthzUnavailableStatus = httpapi.DefaultAuthzUnavailableStatus
	}
}

// Validate refuses a configuration the service cannot run with, naming
// every problem at once.
func (c ServiceConfig) Validate() error {
	var errs []error
	policy := c.Policy
	if policy.MaxSessionsPerUser < 1 {
		errs = append(errs, fmt.Errorf("--max-sessions-per-user must be at least 1, got %d", policy.MaxSessionsPerUser))
		policy.MaxSessionsPerUser = 1 // named above; the rest of the policy is checked below
	}
	if err := policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.LoginThrottle.Validate(); err != nil {
		errs = append(errs, err)
	}
	positive := map[string]time.Duration{"use-granularity": c.UseGranularity, "max-lag": c.MaxLag, "min-seq-wait": c.MinSeqWait, "tally-every": c.TallyEvery}
	for name, d := range positive {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("--%s must be positive, got %s", name, d))
		}
	}
	if c.HashConcurrency < 1 || c.HashQueue < 0 || c.HashWait < 0 {
		errs = append(errs, fmt.Errorf("--hash-concurrency must be at least 1 and --hash-queue, --hash-wait not negative (got %d, %d, %s)", c.HashConcurrency, c.HashQueue, c.HashWait))
	}
	if c.UseQueueSize <= 0 {
		errs = append(errs, fmt.Errorf("--use-queue must be positive, got %d", c.UseQueueSize))
	}
	if c.StreamReplicas < 0 {
		errs = append(errs, fmt.Errorf("--stream-replicas must not be negative, got %d", c.StreamReplicas))
	}
	if c.NATSURL != "" && c.NATSListen != "" {
		errs = append(errs, errors.New("--nats-listen opens the embedded server, which --nats-url replaces: give one of them"))
	}
	if c.NATSURL == "" && !c.NATS.IsZero() {
		errs = append(errs, errors.New("--nats-nkey, --nats-creds and --nats-tls-* are for --nats-url; the embedded server uses the data dir's identities"))
	}
	if c.PasswordParams.Memory == 0 || c.PasswordParams.Iterations == 0 {
		errs = append(errs, errors.New("password hashing parameters are unset"))
	}
	if !(c.AddressRate > 0) || c.AddressBurst < 1 {
		errs = append(errs, fmt.Errorf("--address-rate must be positive and --address-burst at least 1 (got %g, %d)", c.AddressRate, c.AddressBurst))
	}
	if !(c.AdminFailureRate > 0) || c.AdminFailureBurst < 1 {
		errs = append(errs, fmt.Errorf("the admin key failure limit must be positive (got %g per second, burst %d)", c.AdminFailureRate, c.AdminFailureBurst))
	}
	if c.TrackedAddresses < 1 {
		errs = append(errs, fmt.Errorf("--tracked-addresses must be at least 1, got %d", c.TrackedAddresses))
	}
	if _, err := httpapi.ParseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if err := httpapi.CheckAuthzUnavailableStatus(c.AuthzUnavailableStatus); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Notify.validate(c.HTTPAddr)...)
	if c.AdminKey != "" && c.AdminKeyFile != "" {
		errs = append(errs, errors.New("LEDGER_ADMIN_KEY and --admin-key-file both give an admin key: give one of them"))
	} else if c.AdminKey != "" {
		if err := checkAdminKey(c.AdminKey, "LEDGER_ADMIN_KEY"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// configFlag is --config FILE: a YAML file with a section per command
// (`serve:` holds serve's flags by their long names). Flags win over
// environment variables, which win over the file: kong itself lets a file
// override the environment, so the file's resolver steps aside for any
// flag whose variable is set.
type configFlag string

func (c configFlag) BeforeResolve(_ *kong.Kong, ctx *kong.Context, trace *kong.Path) error {
	path := kong.ExpandPath(string(ctx.FlagValue(trace.Flag).(configFlag)))
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	// A misspelt key would otherwise be ignored without a word.
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	if err := checkKeys(ctx.Model.Node, doc, ""); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	r, err := kongyaml.Loader(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	ctx.AddResolver(envWins{r})
	return nil
}

type envWins struct{ kong.Resolver }

func (e envWins) Resolve(ctx *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
	for _, env := range flag.Envs {
		if _, set := os.LookupEnv(env); set {
			return nil, nil
		}
	}
	return e.Resolver.Resolve(ctx, parent, flag)
}

// checkKeys accepts a key if it names a flag of node or of a parent, or a
// command under node (then its value must be a section for it).
func checkKeys(node *kong.Node, doc map[string]any, at string) error {
	for key, v := range doc {
		if child := commandNamed(node, key); child != nil {
			section, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s%s: want a section of %s's flags", at, key, key)
			}
			if err := checkKeys(child, section, at+key+"."); err != nil {
				return err
			}
			continue
		}
		if !hasFlag(node, key) {
			return fmt.Errorf("%s%s: no such flag or command", at, key)
		}
	}
	return nil
}

func commandNamed(node *kong.Node, name string) *kong.Node {
	for _, c := range node.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func hasFlag(node *kong.Node, name string) bool {
	for n := node; n != nil; n = n.Parent {
		for _, f := range n.Flags {
			if f.Name == name {
				return true
			}
		}
	}
	return false
}

// applyMemoryLimit sets the runtime's soft memory limit, unless GOMEMLIMIT
// already did. With only GOGC pacing the collector, a flood's garbage
// (request bodies, responses, appends) grows the heap, and so RSS, in step
// with the live heap it sits on, which at 1M sessions is the session cache
// and the projection's state. Password checks used to be the worst of it
// (19 MiB of garbage each); they now run on buffers kept per hash slot.
// A soft limit makes the collector run more often as the heap nears it
// (the runtime caps what that costs at about half the CPU), so memory stays
// near the limit instead of growing with the flood.
func applyMemoryLimit(mib int64, log *slog.Logger) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set || mib <= 0 {
		return
	}
	debug.SetMemoryLimit(mib << 20)
	log.Debug("soft memory limit", "mib", mib)
}

// spreadFlag maps --use-spread 0 ("unpaced") to ServiceConfig's negative,
// whose zero value means its default.
func spreadFlag(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// tarpitFlag maps --tarpit-max 0 ("do not hold") to httpapi's "none",
// whose zero value means its default.
func tarpitFlag(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
