package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/natsauth"
	"github.com/sessionledger/ledger/handlers/command"
)

// fakeClock is the injected "now" of a test service.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testLedger struct {
	*Service
	t     *testing.T
	clock *fakeClock
	logs  *syncBuffer
	cfg   ServiceConfig
}

type option func(*ServiceConfig)

func testConfig(dir string, clock *fakeClock, logs io.Writer) ServiceConfig {
	return ServiceConfig{
		LogConfig:      LogConfig{DataDir: dir, Stream: "LEDGER", StreamReplicas: 1},
		HTTPAddr:       "127.0.0.1:0",
		Policy:         domain.DefaultPolicy(),
		UseGranularity: time.Hour,
		UseQueueSize:   1024,
		// The production algorithm with OWASP's memory cost; one pass
		// instead of two keeps the suite quick on two cores.
		PasswordParams: argon2id.Params{Memory: command.OWASPParams.Memory, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32},
		AdminKey:       testAdminKey,
		Now:            clock.Now,
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// startLedger runs a full service (embedded JetStream + Pebble) on dir.
func startLedger(t *testing.T, dir string, clock *fakeClock, opts ...option) *testLedger {
	t.Helper()
	logs := &syncBuffer{}
	cfg := testConfig(dir, clock, logs)
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	svc, err := StartService(ctx, cfg)
	if err != nil {
		t.Fatalf("start ledger: %v", err)
	}
	l := &testLedger{Service: svc, t: t, clock: clock, logs: logs, cfg: cfg}
	t.Cleanup(l.stop)
	return l
}

// joining makes an instance a second writer of a's ledger: it connects to
// a's embedded NATS (a must listen) as a's writer identity, and signs with
// a's key.
func joining(a *testLedger) option {
	return func(c *ServiceConfig) {
		c.NATSURL = a.ll.emb.ClientURL()
		c.NATS = natsauth.ClientConfig{NkeyFile: filepath.Join(a.cfg.DataDir, "nats", "writer.nk")}
		c.SigningKeyFile = signingKeyPath(a.cfg.LogConfig)
	}
}

// listening lets other processes connect to the instance's embedded NATS.
func listening(c *ServiceConfig) { c.NATSListen = "127.0.0.1:0" }

func (l *testLedger) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		l.t.Errorf("close ledger: %v", err)
	}
}

// response is a decoded JSON response.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (r response) str(path ...string) string {
	v := r.get(path...)
	s, _ := v.(string)
	return s
}

func (r response) get(path ...string) any {
	var v any = r.Body
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

var client = &http.Client{Timeout: 30 * time.Second}

func (l *testLedger) do(method, path, token string, body any) response {
	l.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			l.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, l.URL()+path, rd)
	if err != nil {
		l.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			l.t.Fatalf("%s %s: body is not a JSON object: %q", method, path, raw)
		}
	}
	return out
}

type creds struct {
	Email        string `json:"email"`
	Password     string `json:"password"`
	KeepLoggedIn bool   `json:"keep_logged_in"`
}

// signup registers an account and returns the token and ids.
func (l *testLedger) signup(email, password string, keep bool) (token, userID, sessionID string) {
	l.t.Helper()
	r := l.do("POST", "/v1/auth/signup", "", creds{email, password, keep})
	if r.Status != http.StatusCreated {
		l.t.Fatalf("signup %s: %d %s", email, r.Status, r.Raw)
	}
	return r.str("response", "token"), r.str("response", "user_id"), r.str("response", "session_id")
}

func (l *testLedger) login(email, password string, keep bool) (token, sessionID string) {
	l.t.Helper()
	r := l.do("POST", "/v1/auth/login", "", creds{email, password, keep})
	if r.Status != http.StatusOK {
		l.t.Fatalf("login %s: %d %s", email, r.Status, r.Raw)
	}
	return r.str("response", "token"), r.str("response", "session_id")
}

// verdict is the comparable outcome of a validate call.
type verdict struct {
	Status int
	Reason string
	Detail string
	Idle   string
	Max    string
}

func (l *testLedger) verdict(token string) verdict {
	l.t.Helper()
	r := l.do("GET", "/v1/validate?touch=false", token, nil)
	return verdict{Status: r.Status, Reason: r.str("reason"), Detail: r.str("expired") + r.str("revoked_by"),
		Idle: r.str("idle_expires_at"), Max: r.str("max_expires_at")}
}

// lastSeq is the stream's last sequence.
func (l *testLedger) lastSeq() uint64 {
	l.t.Helper()
	seq, err := l.ll.store.LastSeq(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	return seq
}

// events reads every event on the stream, optionally only one subject.
func (l *testLedger) events(subject string) []domain.Event {
	l.t.Helper()
	var out []domain.Event
	err := l.ll.store.ReadFrom(context.Background(), 1, func(r eventstore.Record) error {
		if subject != "" && r.Subject != subject {
			return nil
		}
		e, err := domain.DecodeEvent(r.Data)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

// eventually polls cond until it holds or the deadline passes; it never
// sleeps longer than needed.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

const testAdminKey = "test-admin-key"

// admin performs an audit request with the admin key.
func (l *testLedger) admin(path string) response {
	l.t.Helper()
	req, err := http.NewRequest("GET", l.URL()+path, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", testAdminKey)
	res, err := client.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	if err := json.Unmarshal(raw, &out.Body); err != nil {
		l.t.Fatalf("GET %s: %q", path, raw)
	}
	return out
}
