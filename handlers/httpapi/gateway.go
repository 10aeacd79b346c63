package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/sessionledger/ledger/handlers/query"
)

// Gateway mode. nginx auth_request, Traefik forwardAuth and Envoy ext_authz
// ask the ledger about every request they pass on, and read only the status
// and the headers of its answer: auth_request drops the body, and turns any
// status but 2xx, 401 and 403 into a 500. So validate puts the verdict in
// headers too, and GET /v1/authz answers in headers alone, with a status
// a gateway understands even when the ledger cannot answer.
const (
	HeaderUserID      = "X-Ledger-User-Id"
	HeaderSessionID   = "X-Ledger-Session-Id"
	HeaderRole        = "X-Ledger-Role"
	HeaderReason      = "X-Ledger-Reason"
	HeaderRequireRole = "X-Ledger-Require-Role"
	// HeaderRequire: "aal2" refuses a session without a second factor
	// (403, X-Ledger-Reason forbidden:step_up).
	HeaderRequire = "X-Ledger-Require"

	gatewayPath = "/v1/authz"
)

// AuthzUnavailableStatuses are the statuses /v1/authz may answer with when
// the ledger cannot vouch for a token: 401 and 403 reach the client through
// every gateway (auth_request turns anything else into a 500), 503 through
// those that pass the status on (Traefik, Envoy).
var AuthzUnavailableStatuses = []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable}

// DefaultAuthzUnavailableStatus is 401: refused, like a token the ledger
// does not know, with X-Ledger-Reason saying it is the ledger's fault.
const DefaultAuthzUnavailableStatus = http.StatusUnauthorized

// CheckAuthzUnavailableStatus refuses a status outside
// AuthzUnavailableStatuses.
func CheckAuthzUnavailableStatus(status int) error {
	for _, s := range AuthzUnavailableStatuses {
		if s == status {
			return nil
		}
	}
	return fmt.Errorf("--authz-unavailable-status must be 401, 403 or 503, got %d", status)
}

// roleOf is the role a session acts in, for X-Ledger-Role.
func roleOf(v query.Validation) string { return string(v.Role) }

// isGatewayPath reports whether p is /v1/authz or below it (Envoy's
// ext_authz appends the original request's path to its path_prefix).
func isGatewayPath(p string) bool {
	return p == gatewayPath || strings.HasPrefix(p, gatewayPath+"/")
}

// tokenReason is the X-Ledger-Reason of a 401 about a bearer token:
// "invalid", "expired:idle|max" or "revoked:<by>", the verdict's reason as
// the audit and the session list spell it; "" for any other error.
func tokenReason(e *apiError) string {
	switch e.Reason {
	case "TOKEN_INVALID":
		return "invalid"
	case "TOKEN_EXPIRED":
		return "expired:" + e.Expired
	case "TOKEN_REVOKED":
		return "revoked:" + e.RevokedBy
	}
	return ""
}

// unavailableReason is the X-Ledger-Reason of an answer the ledger could
// not give: "unavailable:" and the error's reason in lower case
// (unavailable:projection_behind, unavailable:internal_error, …);
// "unavailable:timeout" for UNAVAILABLE, a log that did not answer in time.
func unavailableReason(e *apiError) string {
	if e.Reason == "UNAVAILABLE" {
		return "unavailable:timeout"
	}
	return "unavailable:" + strings.ToLower(e.Reason)
}

// roleAllowed reports whether role is one of the comma-separated roles of
// an X-Ledger-Require-Role header.
func roleAllowed(role, required string) bool {
	for r := range strings.SplitSeq(required, ",") {
		if strings.TrimSpace(r) == role {
			return true
		}
	}
	return false
}

// authz answers a gateway: validate's checks and its use (at most one per
// request, recorded as validate records it), in status and headers only,
// with an empty body, for every method (a gateway asks with the method of
// the request it guards) and any path below /v1/authz. 200 carries the
// identity for the upstream; 401 and 403 carry X-Ledger-Reason; when the
// ledger cannot vouch for the token (fail closed, an error of its own) the
// status is Config.AuthzUnavailableStatus, also with X-Ledger-Reason.
// X-Ledger-Min-Seq and min_seq are not read here (readYourWrites passes
// these paths by): they come from the gateway's client, not the gateway.
func (a *API) authz(w http.ResponseWriter, r *http.Request) {
	w.Header()["Cache-Control"] = headerNoStore
	if a.cfg.Freshness != nil {
		if err := a.cfg.Freshness.Check(); err != nil {
			a.authzUnavailable(w, projectionBehind(err))
			return
		}
	}
	v, err := a.cfg.Queries.Validate.Handle(r.Context(), bearer(r), true)
	if err != nil {
		e := errorFor(err)
		if e.StatusCode == http.StatusUnauthorized {
			a.verdicts.WithLabelValues("invalid").Inc()
			authzDenied(w, http.StatusUnauthorized, tokenReason(e))
			return
		}
		if e == errInternal {
			a.log.Error("request failed", "route", r.Pattern, "err", err)
		}
		a.authzUnavailable(w, e)
		return
	}
	if !v.Verdict.Valid {
		a.verdicts.WithLabelValues(string(v.Verdict.Reason)).Inc()
		authzDenied(w, http.StatusUnauthorized, tokenReason(verdictError(v.Verdict)))
		return
	}
	a.validCount.Inc()
	role := roleOf(v)
	if required := r.Header.Get(HeaderRequireRole); required != "" && !roleAllowed(role, required) {
		authzDenied(w, http.StatusForbidden, "forbidden:role")
		return
	}
	if r.Header.Get(HeaderRequire) == AAL2 && !v.Session.MFA() {
		authzDenied(w, http.StatusForbidden, "forbidden:step_up")
		return
	}
	setIdentity(w.Header(), v.Session.UserID(), v.Session.ID(), role)
	w.WriteHeader(http.StatusOK)
}

// setIdentity sets the identity headers of a valid token's answer. The
// keys are canonical (Set would canonicalise them on every request); the
// three values share one allocation, each capped so that an append to
// one cannot reach the next.
func setIdentity(h http.Header, userID, sessionID, role string) {
	ids := &[3]string{userID, sessionID, role}
	h[HeaderUserID] = ids[0:1:1]
	h[HeaderSessionID] = ids[1:2:2]
	h[HeaderRole] = ids[2:3:3]
}

func authzDenied(w http.ResponseWriter, status int, reason string) {
	h := w.Header()
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	h.Set(HeaderReason, reason)
	w.WriteHeader(status)
}

// authzUnavailable answers with the configured status: a gateway must see
// a refusal it passes on (never a 5xx that auth_request makes a 500), and
// the client must be able to tell it from a bad token.
func (a *API) authzUnavailable(w http.ResponseWriter, e *apiError) {
	status := a.cfg.AuthzUnavailableStatus
	if status == 0 {
		status = DefaultAuthzUnavailableStatus
	}
	h := w.Header()
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", "Bearer")
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	h.Set(HeaderReason, unavailableReason(e))
	w.WriteHeader(status)
}

// gatewayRoutes are gateway mode's patterns: every method, so outside the
// access table (Handler registers them; GatewayRoutes lists them).
var gatewayRoutes = []Route{
	{Path: gatewayPath, Access: Everyone},
	{Path: gatewayPath + "/{path...}", Access: Everyone},
}

// GatewayRoutes are the routes of gateway mode, which answer every method.
func GatewayRoutes() []Route { return append([]Route(nil), gatewayRoutes...) }
