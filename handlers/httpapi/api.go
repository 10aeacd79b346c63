package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/query"
)

// Config is everything the API serves from.
type Config struct {
	Commands command.Handlers
	Queries  query.Handlers
	// Lifecycle are the password change, reset and email code commands
	// (lifecycle.go); not configured, their routes answer 503.
	Lifecycle command.LifecycleHandlers
	// Admin are the admin commands (service keys, apps, roles, admin
	// revocations); Access checks service and app keys.
	Admin  command.AdminHandlers
	Access query.AccessHandler
	// AdminKey is the bootstrap key: a service key with every scope that
	// is in no event (LEDGER_ADMIN_KEY, --admin-key-file, the data dir's
	// admin-key); nil: none.
	AdminKey *AdminKey
	// RequireAppKey makes the credential routes (credentialRoutes) take
	// only requests with a registered app's key in X-API-Key.
	RequireAppKey bool
	Digests       func() (Digests, error)

	// Ready reports whether this instance can answer correctly: the log
	// reachable and intact, the projection caught up. An error may be a
	// *NotReady naming its reason.
	Ready   func(ctx context.Context) (Readiness, error)
	Metrics http.Handler
	Log     *slog.Logger
	// Registerer receives the HTTP metrics.
	Registerer prometheus.Registerer

	// Freshness, if set, serves min_seq waits and makes validate fail
	// closed when the projection may be stale (see freshness.go).
	Freshness Freshness

	// FeedHeartbeat is how often an idle revocation feed says it is
	// alive (default 15s).
	FeedHeartbeat time.Duration
	// TarpitMax is the longest a refusal for load or guessing is held
	// before it is sent (tarpit.go); 0 is DefaultTarpitMax, negative none.
	TarpitMax time.Duration

	// Limits are the per-client-address limits (ratelimit.go); the zero
	// value limits nothing and believes no X-Forwarded-For.
	Limits Limits

	// AuthzUnavailableStatus is what gateway mode (/v1/authz, gateway.go)
	// answers when the ledger cannot vouch for a token: 401 (0 means 401),
	// 403 or 503.
	AuthzUnavailableStatus int
}

// API is the HTTP port.
type API struct {
	cfg        Config
	log        *slog.Logger
	verdicts   *prometheus.CounterVec
	validCount prometheus.Counter // verdicts{verdict="valid"}, bound once
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec

	credentials   *addressLimiter // nil: no limit
	adminLimiter  *addressLimiter // nil: no limit
	limited       *prometheus.CounterVec
	adminFailures prometheus.Counter
	feedSlots     chan struct{} // one per open revocation feed
	tarpitSlots   chan struct{} // one per refusal being held (tarpit.go)
	held          prometheus.Counter
}

func New(cfg Config) *API {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.FeedHeartbeat <= 0 {
		cfg.FeedHeartbeat = 15 * time.Second
	}
	if cfg.TarpitMax == 0 {
		cfg.TarpitMax = DefaultTarpitMax
	}
	a := &API{
		cfg: cfg,
		log: cfg.Log,
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_validate_verdicts_total", Help: "Validate answers by verdict and reason."}, []string{"verdict"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_http_requests_total", Help: "HTTP requests by route and status code."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ledger_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"route"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_http_rate_limited_total", Help: "Requests refused with 429 RATE_LIMITED by a per-address limit, by route."}, []string{"route"}),
		adminFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledger_admin_key_failures_total", Help: "Audit API requests with a wrong admin key."}),
		credentials:  newAddressLimiter(cfg.Limits.Credentials, cfg.Limits.TrackedAddresses),
		adminLimiter: newAddressLimiter(cfg.Limits.AdminFailures, cfg.Limits.TrackedAddresses),
		feedSlots:    make(chan struct{}, MaxFeedStreams),
		tarpitSlots:  make(chan struct{}, TarpitSlots),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledger_http_refusals_held_total", Help: "Refusals for load or guessing (429, 503 BUSY) held before they were sent (the tarpit)."}),
	}
	a.validCount = a.verdicts.WithLabelValues("valid")
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(a.verdicts, a.requests, a.latency, a.limited, a.adminFailures, a.held)
	}
	return a
}

// Handler routes the whole API: every row of the access table (routes),
// behind its access check.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	// The metrics of each pattern the mux routes by, and of "" (none
	// matched: "unmatched"); read-only once serving.
	metrics := map[string]*routeMetrics{"": a.newRouteMetrics("unmatched")}
	handle := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, h)
		metrics[pattern] = a.newRouteMetrics(pattern)
	}
	methods := map[string][]string{}
	var paths []string
	for _, rt := range a.routes() {
		h := a.guard(rt.Route, rt.handler)
		if slices.Contains(credentialRoutes, rt.Pattern()) {
			h = a.limitCredentials(a.requireAppKey(h))
		}
		handle(rt.Pattern(), h)
		if methods[rt.Path] == nil {
			paths = append(paths, rt.Path)
		}
		methods[rt.Path] = append(methods[rt.Path], rt.Method)
	}
	for _, path := range paths {
		// The same path without a method catches every other method, so a
		// wrong method gets a JSON 405 instead of the mux's plain text.
		allow := strings.Join(methods[path], ", ")
		handle(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, errMethodNotAllowed)
		})
	}
	// Gateway mode (gateway.go) is outside the table: every method (a
	// gateway asks with the method of the request it guards), any path
	// below /v1/authz (Envoy's ext_authz appends the original path), no
	// 405 and no access check: it is validate, answered in its status and
	// headers. gatewayRoutes lists it for the docs and the tests.
	for _, rt := range gatewayRoutes {
		handle(rt.Path, a.authz)
	}

	handle("/", func(w http.ResponseWriter, r *http.Request) { writeError(w, errNotFound) })
	return a.instrument(canonicalPaths(a.readYourWrites(mux)), metrics)
}

// RequestTimeout bounds every request, so a write waiting on a stalled log
// or projection still gets a JSON 503 before the server's write timeout.
const RequestTimeout = 15 * time.Second

// instrument records request counts and latency by route pattern (never by
// raw path, which could carry ids), bounds each request in time, and
// recovers from panics.
// metrics holds each pattern's series (routeMetrics); a pattern missing
// from it is looked up in the vectors.
func (a *API) instrument(next http.Handler, metrics map[string]*routeMetrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// One allocation for the writer and the bound (deadline.go).
		st := &requestState{statusWriter: statusWriter{ResponseWriter: w, status: http.StatusOK}}
		if r.URL.Path != FeedPath { // a stream lives as long as its client
			st.deadline.init(r.Context(), start.Add(RequestTimeout))
			defer st.deadline.cancel()
			r = r.WithContext(&st.deadline)
		}
		sw := &st.statusWriter
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				a.log.Error("panic serving request", "route", r.Pattern, "panic", p)
				if !sw.wrote {
					writeError(sw, errInternal)
				}
			}
			a.observe(metrics, r.Pattern, sw.status, time.Since(start))
		}()
		next.ServeHTTP(sw, r)
	})
}

// requestState is what instrument keeps for one request.
type requestState struct {
	statusWriter
	deadline deadlineCtx
}

// observe counts a request of route (a ServeMux pattern, "" if none
// matched) answered with code after d.
func (a *API) observe(metrics map[string]*routeMetrics, route string, code int, d time.Duration) {
	if m := metrics[route]; m != nil {
		m.observe(code, d)
		return
	}
	if route == "" {
		route = "unmatched"
	}
	a.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	a.latency.WithLabelValues(route).Observe(d.Seconds())
}

// routeMetrics are one route's series of the HTTP metrics, each looked up
// in its vector once, on the route's first request with that code (as
// WithLabelValues on every request would create it: /metrics shows the
// same series at the same moments), then kept: the vectors hash their
// labels and take a lock on every lookup.
type routeMetrics struct {
	route    string
	requests *prometheus.CounterVec

	latencyOnce sync.Once
	latencyVec  *prometheus.HistogramVec
	latency     prometheus.Observer

	mu    sync.Mutex                                 // serialises additions to codes
	codes atomic.Pointer[map[int]prometheus.Counter] // copied on write
}

func (a *API) newRouteMetrics(route string) *routeMetrics {
	m := &routeMetrics{route: route, requests: a.requests, latencyVec: a.latency}
	m.codes.Store(&map[int]prometheus.Counter{})
	return m
}

func (m *routeMetrics) observe(code int, d time.Duration) {
	c, ok := (*m.codes.Load())[code]
	if !ok {
		c = m.counter(code)
	}
	c.Inc()
	m.latencyOnce.Do(func() { m.latency = m.latencyVec.WithLabelValues(m.route) })
	m.latency.Observe(d.Seconds())
}

func (m *routeMetrics) counter(code int) prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.codes.Load()
	if c, ok := old[code]; ok {
		return c
	}
	c := m.requests.WithLabelValues(m.route, strconv.Itoa(code))
	codes := make(map[int]prometheus.Counter, len(old)+1)
	for k, v := range old {
		codes[k] = v
	}
	codes[code] = c
	m.codes.Store(&codes)
	return c
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (the feed
// flushes and extends its write deadline).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

type credentialsRequest struct {
	Email        *string `json:"email"`
	Password     *string `json:"password"`
	KeepLoggedIn *bool   `json:"keep_logged_in"`
}

// readCredentials reads signup and login bodies; keepLoggedIn is what a
// body without keep_logged_in means.
func (a *API) readCredentials(w http.ResponseWriter, r *http.Request, keepLoggedIn bool) (command.Credentials, bool) {
	var req credentialsRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return command.Credentials{}, false
	}
	return credentialsFrom(w, req.Email, req.Password, req.KeepLoggedIn, keepLoggedIn)
}

// credentialsFrom checks a decoded body's credentials; keepByDefault is
// what a body without keep_logged_in means.
func credentialsFrom(w http.ResponseWriter, email, password *string, keep *bool, keepByDefault bool) (command.Credentials, bool) {
	if email == nil || password == nil {
		writeError(w, invalidRequest("email and password are required"))
		return command.Credentials{}, false
	}
	c := command.Credentials{Email: *email, Password: *password, KeepLoggedIn: keepByDefault}
	if keep != nil {
		c.KeepLoggedIn = *keep
	}
	return c, true
}

// loginRequest is the login body: the credentials and, for an account
// with a second factor, optionally its current TOTP code (API clients save
// the MFA_REQUIRED round trip).
type loginRequest struct {
	Email        *string `json:"email"`
	Password     *string `json:"password"`
	KeepLoggedIn *bool   `json:"keep_logged_in"`
	TOTPCode     *string `json:"totp_code"`
}

// readLogin reads a login body as readCredentials does, with totp_code.
func (a *API) readLogin(w http.ResponseWriter, r *http.Request, keepLoggedIn bool) (command.Credentials, bool) {
	var req loginRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return command.Credentials{}, false
	}
	c, ok := credentialsFrom(w, req.Email, req.Password, req.KeepLoggedIn, keepLoggedIn)
	c.TOTPCode = req.TOTPCode
	return c, ok
}

func (a *API) signup(w http.ResponseWriter, r *http.Request) {
	c, ok := a.readCredentials(w, r, false)
	if !ok {
		return
	}
	is, err := a.cfg.Commands.Signup.Handle(r.Context(), c)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusCreated, issuedBody(is), is.Seq)
}

func (a *API) login(w http.ResponseWriter, r *http.Request) { a.loginKeeping(w, r, false) }

// generateAPIToken is Bubble's generate-api-token workflow (seed 004): its
// callers send {email, password} and expect a year-long token (expires
// 31536000), so a body that does not say keeps the user logged in.
func (a *API) generateAPIToken(w http.ResponseWriter, r *http.Request) { a.loginKeeping(w, r, true) }

func (a *API) loginKeeping(w http.ResponseWriter, r *http.Request, keepLoggedIn bool) {
	c, ok := a.readLogin(w, r, keepLoggedIn)
	if !ok {
		return
	}
	is, err := a.cfg.Commands.Login.Handle(r.Context(), c)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, issuedBody(is), is.Seq)
}

const rfc3339 = time.RFC3339

func (a *API) validate(w http.ResponseWriter, r *http.Request) {
	touch := true
	var required domain.Role
	stepUp := false
	if r.URL.RawQuery != "" {
		v, _ := queryParam(r, "touch")
		touch = v != "false"
		if v, ok := queryParam(r, "require_role"); ok {
			role, err := domain.ParseRole(v)
			if err != nil {
				writeError(w, invalidRequest("require_role must be admin, user or guest"))
				return
			}
			required = role
		}
		if v, ok := queryParam(r, "require"); ok {
			if v != AAL2 && v != AAL1 {
				writeError(w, invalidRequest("require must be aal1 or aal2"))
				return
			}
			stepUp = v == AAL2
		}
	}
	v, err := a.cfg.Queries.Validate.Handle(r.Context(), bearer(r), touch)
	if err != nil {
		a.verdicts.WithLabelValues("invalid").Inc()
		a.writeDomainError(w, r, err)
		return
	}
	if !v.Verdict.Valid {
		a.verdicts.WithLabelValues(string(v.Verdict.Reason)).Inc()
		writeError(w, verdictError(v.Verdict))
		return
	}
	if required != "" && !v.Role.AtLeast(required) {
		a.verdicts.WithLabelValues("role_required").Inc()
		writeError(w, newError(http.StatusForbidden, "ROLE_REQUIRED", "the session is valid, but its user's role is "+string(v.Role.Or())+", not "+string(required)))
		return
	}
	if stepUp && !v.Session.MFA() {
		a.verdicts.WithLabelValues("step_up_required").Inc()
		writeError(w, errStepUp())
		return
	}
	a.validCount.Inc()
	s := &v.Session
	body := validBody{
		userID: s.UserID(), sessionID: s.ID(),
		expiresAt: v.Verdict.ExpiresAt(), idleExpiresAt: v.Verdict.IdleExpiresAt, maxExpiresAt: v.Verdict.MaxExpiresAt,
		method: s.Method(), keepLoggedIn: s.KeepLoggedIn(), mfa: s.MFA(), aal: aalOf(s.MFA()), role: string(v.Role.Or()),
	}
	// For gateways that forward identity upstream (Traefik forwardAuth,
	// nginx auth_request_set, Envoy ext_authz).
	setIdentity(w.Header(), body.userID, body.sessionID, roleOf(v))
	buf := bodyBuffers.Get().(*[]byte)
	*buf = body.appendJSON((*buf)[:0])
	writeJSONBytes(w, http.StatusOK, *buf)
	bodyBuffers.Put(buf)
}

func verdictError(v domain.Verdict) *apiError {
	switch v.Reason.Kind() {
	case "expired":
		e := newError(http.StatusUnauthorized, "TOKEN_EXPIRED", "token expired ("+v.Reason.Detail()+" deadline passed)")
		e.Expired = v.Reason.Detail()
		return e
	case "revoked":
		e := newError(http.StatusUnauthorized, "TOKEN_REVOKED", "token revoked ("+v.Reason.Detail()+")")
		e.RevokedBy = v.Reason.Detail()
		return e
	default:
		return newError(http.StatusUnauthorized, "TOKEN_INVALID", "token is not valid")
	}
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const scheme = "bearer "
	if len(h) > len(scheme) && strings.EqualFold(h[:len(scheme)], scheme) {
		return strings.TrimSpace(h[len(scheme):])
	}
	return ""
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	seq, err := a.cfg.Commands.Logout.Handle(r.Context(), caller)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, seqResponse{Seq: seq}, seq)
}

func (a *API) logoutOthers(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	n, seq, err := a.cfg.Commands.LogoutOthers.Handle(r.Context(), caller)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, revokedResponse{Revoked: n, Seq: seq}, seq)
}

func (a *API) sessions(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	q, err := sessionsQuery(r)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	page, err := a.cfg.Queries.Sessions.Handle(r.Context(), caller.UserID, caller.SessionID, q)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sessionsOf(page))
}

// sessionsQuery reads ?limit=, ?cursor= and ?status= of the session list;
// a parameter given twice is as invalid as a bad value.
func sessionsQuery(r *http.Request) (query.SessionsQuery, error) {
	values := r.URL.Query()
	var params [3]*string
	for i, p := range []struct {
		name string
		err  error
	}{{"limit", query.ErrInvalidLimit}, {"cursor", query.ErrInvalidCursor}, {"status", query.ErrInvalidStatus}} {
		switch v := values[p.name]; len(v) {
		case 0:
		case 1:
			params[i] = &v[0]
		default:
			return query.SessionsQuery{}, p.err
		}
	}
	return query.ParseSessionsQuery(params[0], params[1], params[2])
}

func (a *API) terminate(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	seq, err := a.cfg.Commands.Terminate.Handle(r.Context(), caller, r.PathValue("id"))
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, seqResponse{Seq: seq}, seq)
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Ready == nil {
		writeJSON(w, http.StatusOK, statusBody{Status: "ready"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	detail, err := a.cfg.Ready(ctx)
	if err != nil {
		reason := "NOT_READY"
		var nr *NotReady
		if errors.As(err, &nr) {
			reason = nr.Reason
		}
		writeJSON(w, http.StatusServiceUnavailable, notReadyBody{StatusCode: http.StatusServiceUnavailable, Reason: reason, Message: err.Error(), Detail: detail})
		return
	}
	detail.Status = "ready"
	writeJSON(w, http.StatusOK, detail)
}

// NotReady is an error of Config.Ready that names its own reason (the
// default is NOT_READY).
type NotReady struct {
	Reason string
	Err    error
}

func (e *NotReady) Error() string { return e.Err.Error() }
func (e *NotReady) Unwrap() error { return e.Err }

// writeDomainError answers an error from a command or query with its row
// of the error table (errors.go). Unexpected errors are logged and answered
// with a generic 500 so internals never leak to callers.
func (a *API) writeDomainError(w http.ResponseWriter, r *http.Request, err error) {
	e := errorFor(err)
	if e == errInternal {
		a.log.Error("request failed", "route", r.Pattern, "err", err)
	}
	if isRefusal(e) {
		a.tarpit(r, time.Duration(e.retryAfter)*time.Second)
	}
	writeError(w, e)
}
