package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
)

// fromAddress sends requests as if a trusted proxy (the test's loopback)
// had forwarded them for addr.
func fromAddress(addr string) map[string]string {
	return map[string]string{"X-Forwarded-For": addr}
}

func behindLoopbackProxy(c *ServiceConfig) { c.TrustedProxies = []string{"127.0.0.1/32", "::1"} }

// TestOneAddressIsLimited: over HTTP, one client address (named by
// X-Forwarded-For from the trusted loopback proxy) exhausts its bucket and
// gets 429 RATE_LIMITED with Retry-After on every credential route, while
// another address still logs in. IPv6 addresses count by /64.
func TestOneAddressIsLimited(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock(), behindLoopbackProxy, func(c *ServiceConfig) {
		c.AddressRate, c.AddressBurst = 0.01, 3 // one token per 100s: none comes back during the test
	})
	login := func(addr string, path string) response {
		return doURL(t, l.URL(), "POST", path, "", fromAddress(addr), creds{"limited@example.com", "limited password", false})
	}
	const attacker, other = "198.51.100.7", "203.0.113.9"
	if r := doURL(t, l.URL(), "POST", "/v1/auth/signup", "", fromAddress(attacker), creds{"limited@example.com", "limited password", false}); r.Status != 201 {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	for i := range 2 { // the burst of 3, the signup included
		if r := login(attacker, "/v1/auth/login"); r.Status != 200 {
			t.Fatalf("login %d within the burst: %d %s", i, r.Status, r.Raw)
		}
	}
	for _, path := range []string{"/v1/auth/login", "/api/1.1/wf/generate-api-token", "/v1/auth/signup"} {
		r := login(attacker, path)
		retry, err := strconv.Atoi(r.Header.Get("Retry-After"))
		if r.Status != 429 || r.str("reason") != "RATE_LIMITED" || r.get("statusCode") != float64(429) || err != nil || retry < 1 || retry > 100 {
			t.Fatalf("%s past the burst: %d %s, Retry-After %q; want 429 RATE_LIMITED with Retry-After 1..100", path, r.Status, r.Raw, r.Header.Get("Retry-After"))
		}
	}
	if r := login(other, "/v1/auth/login"); r.Status != 200 {
		t.Fatalf("another address: %d %s", r.Status, r.Raw)
	}
	// A spoofed hop left of the proxy's own entry changes nothing.
	if r := login("203.0.113.50, "+attacker, "/v1/auth/login"); r.Status != 429 {
		t.Fatalf("attacker with a made-up X-Forwarded-For entry: %d %s", r.Status, r.Raw)
	}

	// One IPv6 /64 is one address.
	for i := range 3 {
		if r := login("2001:db8:1:2::"+strconv.Itoa(i+1), "/v1/auth/login"); r.Status != 200 {
			t.Fatalf("IPv6 login %d: %d %s", i, r.Status, r.Raw)
		}
	}
	if r := login("2001:db8:1:2:ffff::1", "/v1/auth/login"); r.Status != 429 {
		t.Fatalf("a fourth address of the same /64: %d %s", r.Status, r.Raw)
	}
	if r := login("2001:db8:1:3::1", "/v1/auth/login"); r.Status != 200 {
		t.Fatalf("the next /64: %d %s", r.Status, r.Raw)
	}

	if n := metricValue(t, l, `ledger_http_rate_limited_total{route="POST /v1/auth/login"}`); n != 3 {
		t.Fatalf("ledger_http_rate_limited_total for login = %v, want 3", n)
	}
	if n := metricValue(t, l, `ledger_http_rate_limited_total{route="POST /api/1.1/wf/generate-api-token"}`); n != 1 {
		t.Fatalf("ledger_http_rate_limited_total for generate-api-token = %v, want 1", n)
	}
	// Validation is never limited.
	tok, _ := l.login(t, "limited@example.com", "limited password", false)
	for range 10 {
		if r := doURL(t, l.URL(), "GET", "/v1/validate?touch=false", tok, fromAddress(attacker), nil); r.Status != 200 {
			t.Fatalf("validate from a limited address: %d %s", r.Status, r.Raw)
		}
	}
}

// TestWrongAdminKeysAreLoggedAndThrottled: each wrong key is logged with
// the client address and route but never the key, and counted; after the
// failure burst the address gets 429 whatever key it sends, while the
// right key from another address still works.
func TestWrongAdminKeysAreLoggedAndThrottled(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock(), behindLoopbackProxy) // the default failure limit: 5, then one a minute
	_, _, sid := l.signup(t, "admin@example.com", "admin password", true)
	path := "/v1/audit/sessions/" + sid
	admin := func(addr, key string) response {
		h := fromAddress(addr)
		h["X-API-Key"] = key
		return doURL(t, l.URL(), "GET", path, "", h, nil)
	}
	const guesser = "198.51.100.20"
	var guesses []string
	for i := range defaultAdminFailureBurst {
		g := "wrong-guess-" + strconv.Itoa(i) + "-abcdefghijklmnopqrstuvwxyz"
		guesses = append(guesses, g)
		if r := admin(guesser, g); r.Status != 401 || r.str("reason") != "API_KEY_INVALID" {
			t.Fatalf("wrong key %d: %d %s", i, r.Status, r.Raw)
		}
	}
	for _, key := range []string{"yet-another-wrong-guess-0123456789", testAdminKey} {
		r := admin(guesser, key)
		if r.Status != 429 || r.str("reason") != "RATE_LIMITED" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("after %d wrong keys: %d %s, Retry-After %q; want 429 RATE_LIMITED", defaultAdminFailureBurst, r.Status, r.Raw, r.Header.Get("Retry-After"))
		}
		if s, _ := strconv.Atoi(r.Header.Get("Retry-After")); s < 1 || s > 60 {
			t.Fatalf("Retry-After %q, want 1..60 seconds (one failure a minute)", r.Header.Get("Retry-After"))
		}
	}
	if r := admin("203.0.113.21", testAdminKey); r.Status != 200 {
		t.Fatalf("right key from another address: %d %s", r.Status, r.Raw)
	}
	if n := metricValue(t, l, "ledger_admin_key_failures_total"); n != defaultAdminFailureBurst {
		t.Fatalf("ledger_admin_key_failures_total = %v, want %d", n, defaultAdminFailureBurst)
	}
	logs := l.logs.String()
	var rejected []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "API key rejected") {
			rejected = append(rejected, line)
		}
	}
	if len(rejected) != defaultAdminFailureBurst {
		t.Fatalf("%d 'API key rejected' log lines, want %d:\n%s", len(rejected), defaultAdminFailureBurst, logs)
	}
	for _, line := range rejected {
		if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "client="+guesser) || !strings.Contains(line, "/v1/audit/sessions/{session_id}") {
			t.Fatalf("log line without level WARN, client address or route: %s", line)
		}
	}
	for _, g := range append(guesses, testAdminKey) {
		if strings.Contains(logs, g) {
			t.Fatalf("a presented admin key reached the log: %s", g)
		}
	}
}

// TestAdminKeyMustBeStrongAndPrivate: a short or placeholder key, a key
// file others may read, or two keys at once are refused at start, before
// anything runs, with a message that says what to do; a private file of a
// good key works.
func TestAdminKeyMustBeStrongAndPrivate(t *testing.T) {
	dir, keys := t.TempDir(), t.TempDir()
	const goodKey = "9f86d081884c7d659a2feaa0c55ad015"
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(keys, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", goodKey+"\n", 0o600)
	for name, c := range map[string]struct {
		key, file string
		want      string
	}{
		"short key":            {key: "one-character-is-not-a-key", want: "at least 32"},
		"placeholder key":      {key: strings.Repeat("changeme", 5), want: "placeholder"},
		"key file for all":     {file: write("open", goodKey, 0o644), want: "chmod 600"},
		"group-readable file":  {file: write("group", goodKey, 0o640), want: "chmod 600"},
		"short key in a file":  {file: write("short", "0123456789abcdef\n", 0o600), want: "at least 32"},
		"missing file":         {file: filepath.Join(keys, "nope"), want: "no such file"},
		"key and file at once": {key: goodKey, file: good, want: "give one of them"},
	} {
		cfg := testConfig(dir, newClock(), io.Discard)
		cfg.AdminKey, cfg.AdminKeyFile = c.key, c.file
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		svc, err := StartService(ctx, cfg)
		if err == nil {
			svc.Close(ctx)
		}
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a refusal saying %q", name, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), goodKey) || (c.key != "" && strings.Contains(err.Error(), c.key))) {
			t.Errorf("%s: the refusal quotes the key: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nats")); err == nil {
		t.Error("a refused start got as far as starting NATS")
	}

	l := startLedger(t, dir, newClock(), func(c *ServiceConfig) { c.AdminKey, c.AdminKeyFile = "", good })
	_, _, sid := l.signup(t, "keyfile@example.com", "keyfile password", true)
	for key, want := range map[string]int{goodKey: 200, testAdminKey: 401} {
		if r := doURL(t, l.URL(), "GET", "/v1/audit/sessions/"+sid, "", map[string]string{"X-API-Key": key}, nil); r.Status != want {
			t.Errorf("key %s…: %d %s, want %d", key[:4], r.Status, r.Raw, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, adminKeyFile)); err == nil {
		t.Error("a key was generated although one was configured")
	}
}

// TestAdminKeyAndAddressFlags: the key itself cannot be given as a flag (it
// would show in the process list); --admin-key-file and the limits' flags
// read their LEDGER_* variables and the --config file; Validate names every
// bad value.
func TestAdminKeyAndAddressFlags(t *testing.T) {
	var c cli
	k, err := kong.New(&c, flagDefaults(), kong.Exit(func(int) {}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Parse([]string{"serve", "--admin-key", "0123456789abcdef0123456789abcdef"}); err == nil {
		t.Fatal("--admin-key was accepted")
	}
	if d := parseServe(t); len(d.TrustedProxies) != 0 || d.AddressRate != defaultAddressRate || d.AddressBurst != defaultAddressBurst || d.TrackedAddresses != defaultTrackedAddresses {
		t.Fatalf("defaults: %+v", d.addressFlags)
	}
	file := filepath.Join(t.TempDir(), "ledger.yaml")
	if err := os.WriteFile(file, []byte("serve:\n  trusted-proxies: [10.0.0.0/8, \"fd00::/8\"]\n  address-rate: 0.5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if f := parseServe(t, "--config", file); strings.Join(f.TrustedProxies, " ") != "10.0.0.0/8 fd00::/8" || f.AddressRate != 0.5 {
		t.Fatalf("from the config file: %+v", f.addressFlags)
	}
	t.Setenv("LEDGER_ADMIN_KEY_FILE", "/etc/ledger/admin-key")
	t.Setenv("LEDGER_TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.1")
	s := parseServe(t, "--address-burst", "7")
	if s.AdminKeyFile != "/etc/ledger/admin-key" || strings.Join(s.TrustedProxies, " ") != "10.0.0.0/8 192.0.2.1" ||
		s.AddressBurst != 7 || s.AddressRate != defaultAddressRate || s.TrackedAddresses != defaultTrackedAddresses {
		t.Fatalf("parsed %+v", s.addressFlags)
	}

	bad := ServiceConfig{AddressRate: -1, TrackedAddresses: -1, TrustedProxies: []string{"proxy.internal"}, AdminKey: "short"}
	bad.EnsureDefaults()
	err = bad.Validate()
	for _, want := range []string{"--address-rate", "--tracked-addresses", "proxy.internal", "at least 32"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to name %s", err, want)
		}
	}
}
