package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/httpapi"
)

// The nginx example users copy, filled in by the test.
const nginxTemplate = "../../deploy/gateways/nginx/ledger.conf.template"

// inCI reports whether the CI environment variable says this is CI (as
// GitHub Actions, GitLab and .ci/run set it): there a test must not skip
// for want of a tool that CI installs.
func inCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "false" && v != "0"
}

// nginxBinary finds nginx, or skips the test outside CI and fails it in CI.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if inCI() {
		t.Fatal("nginx is not installed, and CI is set: the gateway test must run in CI (.ci/run installs nginx with apt-get)")
	}
	t.Skip("nginx is not installed: skipping the nginx gateway test (apt-get install -y nginx to run it; with CI=true it fails instead)")
	return ""
}

// freePort is a TCP port on 127.0.0.1 that nothing listened on a moment
// ago (nginx cannot be told to pick one and report it).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// renderTemplate fills the ${NAME} placeholders of a shipped template, as
// envsubst does, and fails if one is left.
func renderTemplate(t *testing.T, path string, vars map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := string(raw)
	for k, v := range vars {
		out = strings.ReplaceAll(out, "${"+k+"}", v)
	}
	if i := strings.Index(out, "${"); i >= 0 {
		t.Fatalf("%s: a placeholder the test did not fill: %.40q", path, out[i:])
	}
	return out
}

// startNginx runs nginx in the foreground as the test's child, everything
// it writes in a temporary directory, with the shipped example (rendered)
// as its only server, and waits until it accepts connections.
func startNginx(t *testing.T, ledgerAddr, appAddr string) (base string) {
	t.Helper()
	bin := nginxBinary(t)
	dir := t.TempDir()
	port := freePort(t)
	site := renderTemplate(t, nginxTemplate, map[string]string{
		"LEDGER_ADDR": ledgerAddr, "APP_ADDR": appAddr, "LISTEN": "127.0.0.1:" + strconv.Itoa(port),
	})
	if err := os.WriteFile(filepath.Join(dir, "ledger.conf"), []byte(site), 0o600); err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers would otherwise be nobody, locked out of dir
	}
	main := fmt.Sprintf(`%[2]s
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 128; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/ledger.conf;
}
`, dir, user)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	errorLog := func() string { b, _ := os.ReadFile(filepath.Join(dir, "error.log")); return string(b) }
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT) // graceful
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("nginx output:\n%s\nnginx error log:\n%s", logs.String(), errorLog())
		}
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("nginx exited:\n%s\n%s", logs.String(), errorLog())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s within 10s:\n%s\n%s", addr, logs.String(), errorLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoApp is the upstream: it answers 200 with what it received.
type echoApp struct {
	*httptest.Server
	hits atomic.Int64
}

type echoed struct {
	Method string
	Path   string
	Header http.Header
	Body   string
}

func startEchoApp(t *testing.T) *echoApp {
	t.Helper()
	e := &echoApp{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header, Body: string(body)})
	}))
	t.Cleanup(e.Close)
	return e
}

// gatewayAnswer is what the client of nginx got.
type gatewayAnswer struct {
	status int
	header http.Header
	body   string
	app    *echoed // what the app received, when it answered
}

func throughGateway(t *testing.T, base, method, path, token string, header map[string]string, body string) gatewayAnswer {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s through nginx: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	a := gatewayAnswer{status: res.StatusCode, header: res.Header, body: string(raw)}
	if res.StatusCode == 200 {
		a.app = &echoed{}
		if err := json.Unmarshal(raw, a.app); err != nil {
			t.Fatalf("%s %s through nginx: 200 that is not the app's: %q", method, path, raw)
		}
	}
	return a
}

// spoofed are headers a client sends under the ledger's names.
var spoofed = map[string]string{
	"X-Ledger-User-Id": "someone-else", "X-Ledger-Session-Id": "not-mine", "X-Ledger-Role": "admin",
	"X-Ledger-Reason": "forged", "X-Ledger-Seq": "1", "X-Ledger-Min-Seq": "99999999", "X-Ledger-Require-Role": "nobody",
}

// TestNginxGateway runs the shipped nginx example (deploy/gateways/nginx)
// with a real nginx between a client, a real ledger and an app that echoes
// what it receives: the app sees only the ledger's identity, whatever the
// client sends; refusals reach the client as 401 with X-Ledger-Reason; a
// ledger that fails closed gives its configured status, never a 500; an
// unreachable one gives 503.
func TestNginxGateway(t *testing.T) {
	nginxBinary(t) // skip (or fail in CI) before starting anything
	started := time.Now()
	clock := newClock()
	l := startLedger(t, t.TempDir(), clock, withMaxLag(time.Second), func(c *ServiceConfig) {
		c.AuthzUnavailableStatus = http.StatusForbidden // the configured status, not the default
	})
	app := startEchoApp(t)
	gw := startNginx(t, strings.TrimPrefix(l.URL(), "http://"), strings.TrimPrefix(app.URL, "http://"))

	token, userID, sessionID := l.signup(t, "gate@example.com", "gateway password", true)
	revoked, _ := l.login(t, "gate@example.com", "gateway password", true)
	if r := l.do(t, "POST", "/v1/auth/logout", revoked, nil); r.Status != 200 {
		t.Fatalf("logout: %d %s", r.Status, r.Raw)
	}

	refused := func(name string, a gatewayAnswer, status int, reason string) {
		t.Helper()
		if a.status != status || a.header.Get("X-Ledger-Reason") != reason || a.app != nil {
			t.Errorf("%s: %d X-Ledger-Reason %q, want %d %q (body %.200q)", name, a.status, a.header.Get("X-Ledger-Reason"), status, reason, a.body)
		}
	}

	// No token, or a spoofed identity without one: 401 at the client, and
	// the app never asked.
	hits := app.hits.Load()
	a := throughGateway(t, gw, "GET", "/orders", "", nil, "")
	refused("no token", a, 401, "invalid")
	if got := a.header.Values("WWW-Authenticate"); len(got) != 1 {
		t.Errorf("no token: WWW-Authenticate %q, want the ledger's, once", got)
	}
	refused("no token, spoofed identity", throughGateway(t, gw, "GET", "/orders", "", spoofed, ""), 401, "invalid")
	refused("revoked", throughGateway(t, gw, "GET", "/orders", revoked, nil, ""), 401, "revoked:logout")
	if n := app.hits.Load() - hits; n != 0 {
		t.Errorf("the app got %d requests nginx should have refused", n)
	}

	// A use is recorded at most once per --use-granularity (1 h), the
	// login counting as one.
	clock.Advance(2 * time.Hour)
	// A valid token: the app sees the ledger's identity and nothing else a
	// client wrote under the ledger's names; a POST keeps its body for the
	// app (the question to the ledger goes without it).
	for _, c := range []struct{ method, body string }{{"GET", ""}, {"POST", `{"item":7}`}} {
		a := throughGateway(t, gw, c.method, "/orders?page=2", token, spoofed, c.body)
		if a.status != 200 || a.header.Get("X-Ledger-Reason") != "" {
			t.Fatalf("%s with a valid token: %d %q %.200q", c.method, a.status, a.header.Get("X-Ledger-Reason"), a.body)
		}
		got := a.app.Header
		want := map[string]string{"X-Ledger-User-Id": userID, "X-Ledger-Session-Id": sessionID, "X-Ledger-Role": "user"}
		for name := range spoofed {
			if v := got.Values(name); len(v) != 0 && (len(v) != 1 || v[0] != want[name]) {
				t.Errorf("%s: the app got %s %q, want %q", c.method, name, v, want[name])
			}
		}
		for name, v := range want {
			if got.Get(name) != v {
				t.Errorf("%s: the app got %s %q, want %q", c.method, name, got.Get(name), v)
			}
		}
		if a.app.Method != c.method || a.app.Path != "/orders?page=2" || a.app.Body != c.body || got.Get("Authorization") == "" {
			t.Errorf("%s: the app got %s %s body %q", c.method, a.app.Method, a.app.Path, a.app.Body)
		}
	}
	// Those were uses: one is recorded, as validate records it.
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		n := 0
		for _, e := range l.events(t, "") {
			if e.Type == domain.EventSessionUsed && e.SessionID == sessionID {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d session_used for %s after requests through the gateway, want 1", n, sessionID)
		}
		return nil
	})

	// The ledger cannot vouch (its NATS gone: it fails closed within
	// --max-lag): the configured status with the reason, never a 500.
	l.ll.emb.Shutdown()
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if v := l.verdict(t, token); v.Status != 503 || v.Reason != "PROJECTION_BEHIND" {
			return fmt.Errorf("validate with NATS down: %+v, want 503 PROJECTION_BEHIND", v)
		}
		return nil
	})
	refused("ledger behind", throughGateway(t, gw, "GET", "/orders", token, nil, ""), 403, "unavailable:projection_behind")
	refused("ledger behind, revoked token", throughGateway(t, gw, "GET", "/orders", revoked, nil, ""), 403, "unavailable:projection_behind")

	// The ledger gone: 503, and why.
	closing := time.Now()
	// Close waits at most this long for the stream's last sequence, which
	// nothing answers now.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Logf("close the ledger with its NATS down: %v", err)
	}
	t.Logf("the ledger closed in %s with its NATS down", time.Since(closing).Round(time.Millisecond))
	refused("ledger unreachable", throughGateway(t, gw, "GET", "/orders", token, nil, ""), 503, "unavailable:unreachable")
	if n := app.hits.Load() - hits; n != 2 {
		t.Errorf("the app got %d requests, want the 2 with a valid token", n)
	}
	t.Logf("nginx gateway test: %s", time.Since(started).Round(time.Millisecond))
}

// TestAuthzUnavailableStatusOption: the flag and its variable are read,
// and a status a gateway would mangle is refused at start.
func TestAuthzUnavailableStatusOption(t *testing.T) {
	if c := parseServe(t); c.AuthzUnavailableStatus != httpapi.DefaultAuthzUnavailableStatus {
		t.Errorf("default %d, want 401", c.AuthzUnavailableStatus)
	}
	t.Setenv("LEDGER_AUTHZ_UNAVAILABLE_STATUS", "503")
	if c := parseServe(t); c.AuthzUnavailableStatus != 503 {
		t.Errorf("from LEDGER_AUTHZ_UNAVAILABLE_STATUS: %d, want 503", c.AuthzUnavailableStatus)
	}
	if c := parseServe(t, "--authz-unavailable-status", "403"); c.AuthzUnavailableStatus != 403 {
		t.Errorf("from the flag: %d, want 403", c.AuthzUnavailableStatus)
	}
	cfg := testConfig(t.TempDir(), newClock(), io.Discard)
	cfg.AuthzUnavailableStatus = 500
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--authz-unavailable-status must be 401, 403 or 503, got 500") {
		t.Errorf("500 accepted: %v", err)
	}
}
