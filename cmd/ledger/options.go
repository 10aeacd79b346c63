package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/alecthomas/kong"
	kongyaml "github.com/alecthomas/kong-yaml"
	"github.com/alexedwards/argon2id"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"gopkg.in/yaml.v3"
)

// Defaults of the service, in one place: EnsureDefaults fills a
// ServiceConfig's zero fields from them, the flags' default tags are
// interpolated from them (flagDefaults), and tests and the dev cluster start
// from them.
const (
	defaultDataDir         = "./data"
	defaultStream          = "LEDGER"
	defaultHTTP            = "127.0.0.1:8080"
	defaultUseGranularity  = time.Hour
	defaultUseQueue        = 65536
	defaultMaxLag          = 5 * time.Second
	defaultMinSeqWait      = 2 * time.Second
	defaultShutdownTimeout = 15 * time.Second
	// Password checks wait at most this long for a free slot.
	defaultHashWait = 2 * time.Second
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
	return kong.Vars{
		"default_data_dir":               defaultDataDir,
		"default_stream":                 defaultStream,
		"default_http":                   defaultHTTP,
		"default_use_granularity":        defaultUseGranularity.String(),
		"default_use_queue":              strconv.Itoa(defaultUseQueue),
		"default_max_lag":                defaultMaxLag.String(),
		"default_min_seq_wait":           defaultMinSeqWait.String(),
		"default_shutdown_timeout":       defaultShutdownTimeout.String(),
		"default_max_keep_logged_in":     p.MaxKeepLoggedIn.String(),
		"default_max_session":            p.MaxSession.String(),
		"default_max_mfa_keep_logged_in": p.MaxMFAKeepLoggedIn.String(),
		"default_max_mfa_session":        p.MaxMFASession.String(),
		"default_idle_window":            p.IdleWindow.String(),
		"default_max_sessions_per_user":  strconv.Itoa(p.MaxSessionsPerUser),
		"default_hash_concurrency":       strconv.Itoa(defaultHashConcurrency()),
		"default_hash_queue":             strconv.Itoa(defaultHashQueue()),
		"default_hash_wait":              defaultHashWait.String(),
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
	if c.UseGranularity == 0 {
		c.UseGranularity = defaultUseGranularity
	}
	if c.UseQueueSize == 0 {
		c.UseQueueSize = defaultUseQueue
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
	if c.HashQueue == 0 {
		c.HashQueue = defaultHashQueue()
	}
	if c.HashWait == 0 {
		c.HashWait = defaultHashWait
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
	positive := map[string]time.Duration{"use-granularity": c.UseGranularity, "max-lag": c.MaxLag, "min-seq-wait": c.MinSeqWait}
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
