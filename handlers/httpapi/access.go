package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/query"
)

// Access is who may call a route. Every route of the API has one row in
// the access table (API.routes), and Handler enforces it before the
// route's handler runs; README's API table and TestAccessTable
// (cmd/ledger) follow the same rows.
type Access int

const (
	// Everyone: no credential. (Validate takes the token it judges, not
	// a credential of its caller.)
	Everyone Access = iota
	// Users: the Bearer token of a valid session, whatever the user's
	// role: users and admins, and guests too, who must be able to see and
	// end their own sessions. Missing or not valid: 401 TOKEN_*.
	Users
	// Admins: a service key (X-API-Key) with the route's scope, or the
	// Bearer token of a user whose role is admin. No credential: 401
	// API_KEY_REQUIRED; an unknown or revoked key: 401 API_KEY_INVALID
	// (logged, and charged to the address's failure bucket); a key without
	// the scope: 403 KEY_SCOPE_DENIED; a token of another role: 403
	// ROLE_REQUIRED.
	Admins
	// Keys: a service key with the route's scope only; a Bearer token
	// does not admit it (401 API_KEY_REQUIRED).
	Keys
)

func (a Access) String() string {
	return [...]string{"everyone", "users and admins", "admins", "service keys"}[a]
}

// Route is one row of the access table: a method and path (an
// http.ServeMux pattern), who may call it, and, for Admins and Keys, the
// service-key scope that admits it.
//
// To add a route, add a row to API.routes: the path, its Access, its
// Scope (for Admins and Keys), and the handler. A Users handler gets its
// caller with a.caller(r); Admins and Keys handlers get the principal
// (service key or admin user) with principalOf(r), to name who decided in
// the events they cause. Nothing else is needed: the access check, the
// 405 for other methods and the metrics by pattern come with the row. A
// credential route (one that checks a password) is listed in
// credentialRoutes too, for the per-address limit and --require-app-key.
type Route struct {
	Method string
	Path   string
	Access Access
	Scope  domain.Scope // "" for Everyone and Users
}

// Pattern is the route's ServeMux pattern, "METHOD /path".
func (r Route) Pattern() string { return r.Method + " " + r.Path }

type routeRow struct {
	Route
	handler http.HandlerFunc
}

// routes is the access table.
func (a *API) routes() []routeRow {
	row := func(method, path string, access Access, scope domain.Scope, h http.HandlerFunc) routeRow {
		return routeRow{Route{Method: method, Path: path, Access: access, Scope: scope}, h}
	}
	rows := []routeRow{
		row("POST", "/v1/auth/signup", Everyone, "", a.signup),
		row("POST", "/v1/auth/login", Everyone, "", a.login),
		row("POST", "/api/1.1/wf/generate-api-token", Everyone, "", a.generateAPIToken),
		row("POST", "/v1/auth/api-key", Everyone, "", a.apiKeyLogin),
		row("POST", "/v1/auth/password", Users, "", a.changePassword),
		row("POST", "/v1/auth/password/reset-request", Everyone, "", a.requestReset),
		row("POST", "/v1/auth/password/reset", Everyone, "", a.resetPassword),
		row("POST", "/v1/auth/code/request", Everyone, "", a.requestLoginCode),
		row("POST", "/v1/auth/code/verify", Everyone, "", a.codeLogin),
		row("POST", "/v1/auth/magic", Everyone, "", a.magicLogin),
		row("POST", "/v1/auth/login/mfa", Everyone, "", a.mfaLogin),
		row("GET", "/v1/validate", Everyone, "", a.failClosed(a.validate)),
		row("POST", "/v1/auth/logout", Users, "", a.logout),
		row("POST", "/v1/auth/logout-others", Users, "", a.logoutOthers),
		row("GET", "/v1/sessions", Users, "", a.sessions),
		row("DELETE", "/v1/sessions/{id}", Users, "", a.terminate),
		row("GET", "/v1/api-keys", Users, "", a.listAPIKeys),
		row("POST", "/v1/api-keys", Users, "", a.createAPIKey),
		row("DELETE", "/v1/api-keys/{id}", Users, "", a.revokeAPIKey),
		row("POST", "/v1/mfa/totp", Users, "", a.startMFA),
		row("POST", "/v1/mfa/totp/confirm", Users, "", a.confirmMFA),
		row("DELETE", "/v1/mfa/totp", Users, "", a.disableMFA),
		row("POST", IntrospectPath, Keys, domain.ScopeIntrospect, a.introspect),
		row("GET", FeedPath, Keys, domain.ScopeFeed, a.feed),
		row("GET", "/v1/audit/sessions/{session_id}", Keys, domain.ScopeAudit, a.auditSession),
		row("GET", "/v1/audit/users/{user_id}/events", Keys, domain.ScopeAudit, a.auditUserEvents),
		row("GET", "/v1/audit/digest", Keys, domain.ScopeAudit, a.auditDigest),
		row("POST", "/v1/admin/keys", Admins, domain.ScopeAdmin, a.createServiceKey),
		row("GET", "/v1/admin/keys", Admins, domain.ScopeAdmin, a.listServiceKeys),
		row("DELETE", "/v1/admin/keys/{id}", Admins, domain.ScopeAdmin, a.revokeServiceKey),
		row("POST", "/v1/admin/apps", Admins, domain.ScopeAdmin, a.registerApp),
		row("GET", "/v1/admin/apps", Admins, domain.ScopeAdmin, a.listApps),
		row("DELETE", "/v1/admin/apps/{id}", Admins, domain.ScopeAdmin, a.revokeApp),
		row("PUT", "/v1/admin/users/{id}/role", Admins, domain.ScopeAdmin, a.setRole),
		row("GET", "/v1/admin/users/{id}/sessions", Admins, domain.ScopeAdmin, a.adminUserSessions),
		row("POST", "/v1/admin/users/{id}/revoke-sessions", Admins, domain.ScopeAdmin, a.adminRevokeUserSessions),
		row("POST", "/v1/admin/users/{id}/erase", Admins, domain.ScopeAdmin, a.eraseUser),
		row("DELETE", "/v1/admin/sessions/{id}", Admins, domain.ScopeAdmin, a.adminRevokeSession),
		row("GET", "/healthz", Everyone, "", a.healthz),
		row("GET", "/readyz", Everyone, "", a.readyz),
		row("GET", "/openapi.json", Everyone, "", a.openAPI),
	}
	if a.cfg.Metrics != nil {
		rows = append(rows, row("GET", "/metrics", Everyone, "", a.cfg.Metrics.ServeHTTP))
	}
	return rows
}

// Routes is the access table without its handlers: what tests walk and
// docs list.
func (a *API) Routes() []Route {
	rows := a.routes()
	out := make([]Route, len(rows))
	for i, r := range rows {
		out[i] = r.Route
	}
	return out
}

// guard enforces a row's access before its handler.
func (a *API) guard(rt Route, next http.HandlerFunc) http.HandlerFunc {
	switch rt.Access {
	case Users:
		return func(w http.ResponseWriter, r *http.Request) {
			p, ok := a.sessionPrincipal(w, r)
			if ok {
				next(w, withPrincipal(r, p))
			}
		}
	case Admins, Keys:
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-API-Key") == "" && (rt.Access == Keys || bearer(r) == "") {
				msg := "this endpoint needs a service key with scope " + string(rt.Scope) + " in X-API-Key"
				if rt.Access == Admins {
					msg += ", or the Bearer token of an admin"
				}
				writeError(w, newError(http.StatusUnauthorized, "API_KEY_REQUIRED", msg))
				return
			}
			if r.Header.Get("X-API-Key") == "" {
				p, ok := a.sessionPrincipal(w, r)
				if !ok {
					return
				}
				if p.Role != domain.RoleAdmin {
					writeError(w, newError(http.StatusForbidden, "ROLE_REQUIRED", "this endpoint is for admins; the token's user has role "+string(p.Role)))
					return
				}
				next(w, withPrincipal(r, p))
				return
			}
			p, ok := a.servicePrincipal(w, r)
			if !ok {
				return
			}
			if !p.Has(rt.Scope) {
				writeError(w, newError(http.StatusForbidden, "KEY_SCOPE_DENIED", "the API key does not have scope "+string(rt.Scope)))
				return
			}
			next(w, withPrincipal(r, p))
		}
	}
	return next
}

// sessionPrincipal validates the Bearer token without counting it as a
// use, and answers 401 itself when it is not valid.
func (a *API) sessionPrincipal(w http.ResponseWriter, r *http.Request) (domain.Principal, bool) {
	v, err := a.cfg.Queries.Validate.Handle(r.Context(), bearer(r), false)
	if err != nil {
		a.writeDomainError(w, r, err)
		return domain.Principal{}, false
	}
	if !v.Verdict.Valid {
		writeError(w, verdictError(v.Verdict))
		return domain.Principal{}, false
	}
	return domain.Principal{UserID: v.Session.UserID(), SessionID: v.Session.ID(), Role: v.Role.Or()}, true
}

// servicePrincipal checks the X-API-Key: the bootstrap key (every scope)
// or an active service key. A wrong key is logged (client address and
// route, never the key), counted, and takes a token from the address's
// Limits.AdminFailures bucket; an address whose bucket is empty gets 429
// RATE_LIMITED whatever key it sends, so keys cannot be guessed faster
// than that bucket refills.
func (a *API) servicePrincipal(w http.ResponseWriter, r *http.Request) (domain.Principal, bool) {
	client := a.clientAddress(r)
	key := addressKey(client)
	if a.adminLimiter != nil {
		if wait, blocked := a.adminLimiter.blocked(key); blocked {
			a.rateLimited(w, r, wait)
			return domain.Principal{}, false
		}
	}
	presented := r.Header.Get("X-API-Key")
	if a.cfg.AdminKey != nil && a.cfg.AdminKey.matches(presented) {
		return domain.Principal{KeyID: domain.BootstrapKeyID, KeyName: "bootstrap", Scopes: domain.Scopes}, true
	}
	p, err := a.cfg.Access.ServiceKey(presented)
	if err == nil {
		return p, true
	}
	if !errors.Is(err, query.ErrAPIKeyInvalid) {
		a.writeDomainError(w, r, err)
		return domain.Principal{}, false
	}
	a.adminFailures.Inc()
	if a.adminLimiter != nil {
		a.adminLimiter.charge(key)
	}
	a.log.Warn("API key rejected", "client", client.String(), "route", r.Pattern)
	writeError(w, errorFor(err))
	return domain.Principal{}, false
}

type principalKey struct{}

func withPrincipal(r *http.Request, p domain.Principal) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
}

// principalOf is who the access check let in.
func principalOf(r *http.Request) domain.Principal {
	p, _ := r.Context().Value(principalKey{}).(domain.Principal)
	return p
}

// caller is the session of a Users route's caller: the one the access
// check let in, or (for a route added outside the table) the Bearer
// token's, validated here.
func (a *API) caller(w http.ResponseWriter, r *http.Request) (command.SessionRef, bool) {
	p, ok := r.Context().Value(principalKey{}).(domain.Principal)
	if !ok || p.SessionID == "" {
		if p, ok = a.sessionPrincipal(w, r); !ok {
			return command.SessionRef{}, false
		}
	}
	return command.SessionRef{UserID: p.UserID, SessionID: p.SessionID}, true
}

// requireAppKey, with Config.RequireAppKey, lets a credential route
// through only with the X-API-Key of a registered, active app (401
// APP_KEY_INVALID otherwise). App keys are publishable, so a wrong one is
// not charged to the address's failure bucket; the credential routes have
// their own per-address limit.
func (a *API) requireAppKey(next http.HandlerFunc) http.HandlerFunc {
	if !a.cfg.RequireAppKey {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := a.cfg.Access.App(r.Header.Get("X-API-Key")); err != nil {
			a.writeDomainError(w, r, err)
			return
		}
		next(w, r)
	}
}
