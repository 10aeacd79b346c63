package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// gatewayFixture is the API over a fake ledger with a movable clock and a
// freshness that can be made to fail closed.
type gatewayFixture struct {
	t     *testing.T
	api   *API
	h     http.Handler
	mu    sync.Mutex
	now   time.Time
	fresh *stubFreshness
}

type stubFreshness struct {
	mu     sync.Mutex
	behind error
}

func (f *stubFreshness) WaitApplied(context.Context, uint64) error { return nil }
func (f *stubFreshness) InLog(context.Context, uint64) error       { return errors.New("beyond the log") }
func (f *stubFreshness) Check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.behind
}

func newGatewayFixture(t *testing.T) *gatewayFixture {
	t.Helper()
	g := &gatewayFixture{t: t, now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), fresh: &stubFreshness{}}
	a, err := fakeAPI(func() time.Time {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.now
	})
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Freshness = g.fresh
	g.api, g.h = a, a.Handler()
	return g
}

func (g *gatewayFixture) do(method, target, token string, header map[string]string, body string) *httptest.ResponseRecorder {
	g.t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	g.h.ServeHTTP(w, r)
	return w
}

// signup returns a new account's token and user id.
func (g *gatewayFixture) signup(email string) (token, userID string) {
	g.t.Helper()
	w := g.do("POST", "/v1/auth/signup", "", nil, `{"email":"`+email+`","password":"correct horse"}`)
	var issued struct{ Response issuedResponse }
	if err := json.Unmarshal(w.Body.Bytes(), &issued); err != nil || w.Code != 201 {
		g.t.Fatalf("signup: %d %s", w.Code, w.Body)
	}
	return issued.Response.Token, issued.Response.UserID
}

// TestValidateTellsGatewaysInHeaders: validate's 200 carries the role and
// every 401 the reason, in headers a gateway that drops the body still
// sees.
func TestValidateTellsGatewaysInHeaders(t *testing.T) {
	g := newGatewayFixture(t)
	token, user := g.signup("ann@example.com")
	w := g.do("GET", "/v1/validate", token, nil, "")
	if w.Code != 200 || w.Header().Get(HeaderRole) != "user" || w.Header().Get(HeaderUserID) != user || w.Header().Get(HeaderReason) != "" {
		t.Fatalf("valid: %d %v", w.Code, w.Header())
	}
	for _, c := range []struct{ name, token, reason string }{
		{"no token", "", "invalid"},
		{"malformed", "slt_nonsense", "invalid"},
		{"wrong secret", token[:len(token)-4] + "AAAA", "invalid"},
	} {
		w := g.do("GET", "/v1/validate", c.token, nil, "")
		if w.Code != 401 || w.Header().Get(HeaderReason) != c.reason || w.Header().Get(HeaderRole) != "" {
			t.Errorf("%s: %d, %s %q, want 401 %q", c.name, w.Code, HeaderReason, w.Header().Get(HeaderReason), c.reason)
		}
	}
	other, _ := g.signup("bob@example.com")
	if w := g.do("POST", "/v1/auth/logout", other, nil, ""); w.Code != 200 {
		t.Fatalf("logout: %d %s", w.Code, w.Body)
	}
	if w := g.do("GET", "/v1/validate", other, nil, ""); w.Code != 401 || w.Header().Get(HeaderReason) != "revoked:logout" {
		t.Errorf("revoked: %d %q", w.Code, w.Header().Get(HeaderReason))
	}
	// The same header on every route that takes a bearer token.
	if w := g.do("GET", "/v1/sessions", other, nil, ""); w.Code != 401 || w.Header().Get(HeaderReason) != "revoked:logout" {
		t.Errorf("session list with a revoked token: %d %q", w.Code, w.Header().Get(HeaderReason))
	}
	g.mu.Lock()
	g.now = g.now.Add(25 * time.Hour) // past the 24 h max of a session without keep_logged_in
	g.mu.Unlock()
	if w := g.do("GET", "/v1/validate", token, nil, ""); w.Code != 401 || w.Header().Get(HeaderReason) != "expired:max" {
		t.Errorf("expired: %d %q", w.Code, w.Header().Get(HeaderReason))
	}
}

// TestAuthz: gateway mode answers in status and headers with an empty
// body, for any method and any path below /v1/authz, ignores the client's
// min_seq, and never answers a 5xx unless configured to.
func TestAuthz(t *testing.T) {
	g := newGatewayFixture(t)
	token, user := g.signup("ann@example.com")
	revoked, _ := g.signup("bob@example.com")
	if w := g.do("POST", "/v1/auth/logout", revoked, nil, ""); w.Code != 200 {
		t.Fatalf("logout: %d %s", w.Code, w.Body)
	}
	type want struct {
		status int
		reason string
	}
	check := func(name string, w *httptest.ResponseRecorder, x want) {
		t.Helper()
		h := w.Header()
		if w.Code != x.status || h.Get(HeaderReason) != x.reason || w.Body.Len() != 0 || h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d %s=%q body %q, want %d %q and no body", name, w.Code, HeaderReason, h.Get(HeaderReason), w.Body, x.status, x.reason)
		}
		if x.status == 200 && (h.Get(HeaderUserID) != user || h.Get(HeaderSessionID) == "" || h.Get(HeaderRole) != "user") {
			t.Errorf("%s: 200 without the identity: %v", name, h)
		}
		if x.status != 200 && (h.Get(HeaderUserID) != "" || h.Get(HeaderRole) != "") {
			t.Errorf("%s: %d with an identity: %v", name, w.Code, h)
		}
		if x.status == 401 && h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", name)
		}
	}
	ok := want{200, ""}
	check("GET", g.do("GET", "/v1/authz", token, nil, ""), ok)
	check("POST with a body", g.do("POST", "/v1/authz", token, nil, `{"x":1}`), ok)
	check("DELETE", g.do("DELETE", "/v1/authz", token, nil, ""), ok)
	check("HEAD", g.do("HEAD", "/v1/authz", token, nil, ""), ok)
	check("Envoy's path_prefix + path", g.do("PUT", "/v1/authz/api/orders/7?x=1", token, nil, ""), ok)
	check("Envoy, original path /", g.do("GET", "/v1/authz/", token, nil, ""), ok)
	check("min_seq from the client", g.do("GET", "/v1/authz/api?min_seq=99999999", token, map[string]string{HeaderMinSeq: "nonsense"}, ""), ok)
	check("role required and held", g.do("GET", "/v1/authz", token, map[string]string{HeaderRequireRole: "admin, user"}, ""), ok)

	check("no token", g.do("GET", "/v1/authz", "", nil, ""), want{401, "invalid"})
	check("unknown token", g.do("GET", "/v1/authz", "slt_00000000000000000000000000000000-AAAA", nil, ""), want{401, "invalid"})
	check("revoked", g.do("GET", "/v1/authz/x", revoked, nil, ""), want{401, "revoked:logout"})
	check("role required, not held", g.do("GET", "/v1/authz", token, map[string]string{HeaderRequireRole: "admin"}, ""), want{403, "forbidden:role"})
	if w := g.do("GET", "/v1/authzx", token, nil, ""); w.Code != 404 {
		t.Errorf("/v1/authzx: %d, want 404", w.Code)
	}

	g.fresh.mu.Lock()
	g.fresh.behind = errors.New("this instance has not yet confirmed it is caught up")
	g.fresh.mu.Unlock()
	check("behind, default status", g.do("GET", "/v1/authz", token, nil, ""), want{401, "unavailable:projection_behind"})
	for _, status := range AuthzUnavailableStatuses {
		g.api.cfg.AuthzUnavailableStatus = status
		check("behind, configured", g.do("GET", "/v1/authz", token, nil, ""), want{status, "unavailable:projection_behind"})
	}
	if w := g.do("GET", "/v1/validate", token, nil, ""); w.Code != 503 {
		t.Errorf("validate while behind: %d, want its 503", w.Code)
	}

	// Per-route metrics, by pattern.
	if n := testutil.ToFloat64(g.api.requests.WithLabelValues("/v1/authz", "200")); n != 5 {
		t.Errorf("ledger_http_requests_total{route=/v1/authz,code=200} = %v, want 5", n)
	}
	if n := testutil.ToFloat64(g.api.requests.WithLabelValues("/v1/authz/{path...}", "401")); n != 1 {
		t.Errorf("ledger_http_requests_total{route=/v1/authz/{path...},code=401} = %v, want 1", n)
	}
}

func TestAuthzUnavailableStatusIsChecked(t *testing.T) {
	for _, s := range []int{401, 403, 503} {
		if err := CheckAuthzUnavailableStatus(s); err != nil {
			t.Errorf("%d: %v", s, err)
		}
	}
	for _, s := range []int{0, 200, 500, 502} {
		if err := CheckAuthzUnavailableStatus(s); err == nil {
			t.Errorf("%d accepted", s)
		}
	}
}
