package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/sessionledger/ledger/domain"
)

// parseServe parses a command line the way main does.
func parseServe(t *testing.T, args ...string) serveCmd {
	t.Helper()
	var c cli
	k, err := kong.New(&c, kong.Name("ledger"), flagDefaults(), kong.Exit(func(int) { t.Fatal("kong tried to exit") }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Parse(append([]string{"serve"}, args...)); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return c.Serve
}

// TestConfigPrecedence: flags win over LEDGER_* variables, which win over
// the --config file, which wins over the defaults.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ledger.yaml")
	if err := os.WriteFile(file, []byte("serve:\n  http: 127.0.0.1:7001\n  max-lag: 9s\n  use-queue: 100\n  idle-window: 48h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LEDGER_MAX_LAG", "7s")
	t.Setenv("LEDGER_USE_QUEUE", "200")
	c := parseServe(t, "--config", file, "--use-queue", "300")
	want := []struct {
		name      string
		got, want any
	}{
		{"http (file over default)", c.HTTP, "127.0.0.1:7001"},
		{"max-lag (env over file)", c.MaxLag, 7 * time.Second},
		{"use-queue (flag over env over file)", c.UseQueue, 300},
		{"idle-window (file)", c.IdleWindow, 48 * time.Hour},
		{"use-granularity (default)", c.UseGranularity, defaultUseGranularity},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s = %v, want %v", w.name, w.got, w.want)
		}
	}
	if d := parseServe(t); d.HTTP != defaultHTTP || d.MaxLag != 7*time.Second {
		t.Errorf("without a file: http %s, max-lag %s", d.HTTP, d.MaxLag)
	}
}

func TestConfigFileWithAnUnknownKeyIsRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ledger.yaml")
	if err := os.WriteFile(file, []byte("serve:\n  max-lagg: 9s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var c cli
	k, _ := kong.New(&c, flagDefaults(), kong.Exit(func(int) {}))
	if _, err := k.Parse([]string{"--config", file, "serve"}); err == nil || !strings.Contains(err.Error(), "max-lagg") {
		t.Fatalf("a misspelt key: %v, want it named", err)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	cfg := ServiceConfig{LogConfig: LogConfig{NATSURL: "nats://x", NATSListen: "127.0.0.1:0"}, UseQueueSize: -1, MaxLag: -time.Second}
	cfg.EnsureDefaults()
	err := cfg.Validate()
	for _, want := range []string{"--max-lag", "--use-queue", "--nats-listen"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to name %s", err, want)
		}
	}
	ok := ServiceConfig{}
	ok.EnsureDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}

// TestMaxSessionsPerUser: the flag's default is the policy's, it reads
// LEDGER_MAX_SESSIONS_PER_USER, and Validate refuses less than 1, once.
func TestMaxSessionsPerUser(t *testing.T) {
	if c := parseServe(t); c.MaxSessionsPerUser != domain.DefaultPolicy().MaxSessionsPerUser {
		t.Fatalf("default %d", c.MaxSessionsPerUser)
	}
	t.Setenv("LEDGER_MAX_SESSIONS_PER_USER", "7")
	if c := parseServe(t); c.MaxSessionsPerUser != 7 {
		t.Fatalf("from the environment: %d, want 7", c.MaxSessionsPerUser)
	}
	cfg := ServiceConfig{Policy: domain.DefaultPolicy()}
	cfg.Policy.MaxSessionsPerUser = 0
	cfg.EnsureDefaults()
	err := cfg.Validate()
	if err == nil || strings.Count(err.Error(), "at least 1, got 0") != 1 || !strings.Contains(err.Error(), "--max-sessions-per-user") {
		t.Fatalf("Validate with 0 sessions per user: %v, want --max-sessions-per-user named once", err)
	}
}

// TestAuditVerifyMemoryLimitIsItsOwn: a server's LEDGER_MEMORY_LIMIT_MIB
// (256, sized for password-check floods) must not cap a verify run on the
// same machine below its own default; LEDGER_AUDIT_MEMORY_LIMIT_MIB sets it.
func TestAuditVerifyMemoryLimitIsItsOwn(t *testing.T) {
	parse := func() int64 {
		t.Helper()
		var c cli
		k, err := kong.New(&c, kong.Name("ledger"), flagDefaults(), kong.Exit(func(int) { t.Fatal("kong tried to exit") }))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Parse([]string{"audit", "verify"}); err != nil {
			t.Fatal(err)
		}
		return c.Audit.Verify.MemoryLimitMiB
	}
	t.Setenv("LEDGER_MEMORY_LIMIT_MIB", "17")
	if got, want := parse(), int64(defaultAuditMemoryLimitMiB); got != want {
		t.Errorf("with the server's variable set: %d MiB, want verify's default %d", got, want)
	}
	t.Setenv("LEDGER_AUDIT_MEMORY_LIMIT_MIB", "77")
	if got := parse(); got != 77 {
		t.Errorf("with LEDGER_AUDIT_MEMORY_LIMIT_MIB=77: %d MiB", got)
	}
}
