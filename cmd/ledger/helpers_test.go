package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/natsauth"
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
	t     *testing.T // the test that started it, for its clean-up only
	clock *fakeClock
	logs  *syncBuffer
	cfg   ServiceConfig
}

type option func(*ServiceConfig)

func testConfig(dir string, clock *fakeClock, logs io.Writer) ServiceConfig {
	privateDir(dir)
	return ServiceConfig{
		LogConfig:      LogConfig{DataDir: dir, Stream: "LEDGER", StreamReplicas: 1},
		HTTPAddr:       "127.0.0.1:0",
		Policy:         domain.DefaultPolicy(),
		UseGranularity: time.Hour,
		UseQueueSize:   1024,
		// The production algorithm at a fraction of its cost: the suite makes
		// hundreds of logins on two cores, and what a test checks does not
		// depend on how long a hash takes (the bound on concurrent hashes
		// has its own test, TestPasswordChecksAreBounded, which only needs
		// hashes to overlap).
		PasswordParams: argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32},
		AdminKey:       testAdminKey,
		// Tests of concurrency send bursts of logins on purpose; load
		// shedding has its own test (TestPasswordChecksAreBounded).
		HashQueue: 1024,
		HashWait:  time.Minute,
		// A request with min_seq waits until its instance has applied that
		// sequence. Tests check the answer, not how soon it comes: on two
		// loaded cores (two 3-node clusters at once under -race) an instance
		// can trail by seconds, and the production bound (2 s) answered 503
		// PROJECTION_BEHIND in CI. The bound itself has its own tests
		// (projections' TestFreshnessFailsClosed, and abuse_test.go).
		MinSeqWait: 20 * time.Second,
		// Refusals are held briefly, not for the production second: the
		// tarpit still runs, the suite does not wait on it.
		TarpitMax: 10 * time.Millisecond,
		// Tests log in from one address many times on purpose; the
		// per-address limit has its own test (TestOneAddressIsLimited).
		AddressRate: math.Inf(1),
		Now:         clock.Now,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// privateDir makes a test's data dir what the ledger demands: t.TempDir
// creates it 0755, and the ledger refuses a data dir open to others.
func privateDir(dir string) {
	_ = os.Chmod(dir, 0o700)
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
		c.MasterKeyFile = masterKeyPath(a.cfg.LogConfig)
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

// errNoAnswer marks a request that got no complete answer: the connection
// failed or was cut, or the context ended.
var errNoAnswer = errors.New("no answer")

// request is the suite's one way to make an HTTP request: method on
// base+path, with a bearer token (if any), extra headers, and a body that is
// sent as is (string, []byte) or as JSON (anything else). A non-empty answer
// must be a JSON object, except a text/plain one (/metrics), which is kept
// only in Raw. It never touches a testing.T, so any goroutine may call it; a
// failure to get an answer wraps errNoAnswer.
func request(ctx context.Context, base, method, path, token string, header map[string]string, body any) (response, error) {
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
			return response{}, fmt.Errorf("%s %s: encode the body: %w", method, path, err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w: %w", method, path, errNoAnswer, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading the %d answer: %w: %w", method, path, res.StatusCode, errNoAnswer, err)
	}
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	if len(raw) > 0 && !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			return out, fmt.Errorf("%s %s: the %d answer is not a JSON object: %q", method, path, res.StatusCode, raw)
		}
	}
	return out, nil
}

// doURL is request for the test goroutine: any error fails the test.
func doURL(t *testing.T, base, method, path, token string, header map[string]string, body any) response {
	t.Helper()
	r, err := request(context.Background(), base, method, path, token, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// do is a request to the instance, from the test goroutine.
func (l *testLedger) do(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	return doURL(t, l.URL(), method, path, token, nil, body)
}

type creds struct {
	Email        string `json:"email"`
	Password     string `json:"password"`
	KeepLoggedIn bool   `json:"keep_logged_in"`
}

// signup registers an account and returns the token and ids.
func (l *testLedger) signup(t *testing.T, email, password string, keep bool) (token, userID, sessionID string) {
	t.Helper()
	r := l.do(t, "POST", "/v1/auth/signup", "", creds{email, password, keep})
	if r.Status != http.StatusCreated {
		t.Fatalf("signup %s: %d %s", email, r.Status, r.Raw)
	}
	return r.str("response", "token"), r.str("response", "user_id"), r.str("response", "session_id")
}

func (l *testLedger) login(t *testing.T, email, password string, keep bool) (token, sessionID string) {
	t.Helper()
	r := l.do(t, "POST", "/v1/auth/login", "", creds{email, password, keep})
	if r.Status != http.StatusOK {
		t.Fatalf("login %s: %d %s", email, r.Status, r.Raw)
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

func (l *testLedger) verdict(t *testing.T, token string) verdict {
	t.Helper()
	r := l.do(t, "GET", "/v1/validate?touch=false", token, nil)
	return verdict{Status: r.Status, Reason: r.str("reason"), Detail: r.str("expired") + r.str("revoked_by"),
		Idle: r.str("idle_expires_at"), Max: r.str("max_expires_at")}
}

// lastSeq is the stream's last sequence.
func (l *testLedger) lastSeq(t *testing.T) uint64 {
	t.Helper()
	seq, err := l.ll.store.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// events reads every event on the stream, optionally only one subject.
func (l *testLedger) events(t *testing.T, subject string) []domain.Event {
	t.Helper()
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
		t.Fatal(err)
	}
	return out
}

// concurrently sends n requests at once, the i-th built by req, and
// returns every answer and error by index (workers never fail the test;
// the caller judges).
func concurrently(n int, req func(i int) (response, error)) ([]response, []error) {
	answers, errs := make([]response, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = req(i)
		}()
	}
	wg.Wait()
	return answers, errs
}

// checkFor calls f every sleep until it returns nil, and fails the test
// with f's last error if that has not happened after total, as nats-server's
// tests do: the error says what was last observed.
func checkFor(t *testing.T, total, sleep time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %v", total, err)
		}
		time.Sleep(sleep)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

const testAdminKey = "test-admin-key-0123456789abcdefghij"

// admin performs an audit request with the admin key.
func (l *testLedger) admin(t *testing.T, path string) response {
	t.Helper()
	r := doURL(t, l.URL(), "GET", path, "", map[string]string{"X-API-Key": testAdminKey}, nil)
	if r.Body == nil {
		t.Fatalf("GET %s: %d answer without a JSON body: %q", path, r.Status, r.Raw)
	}
	return r
}
