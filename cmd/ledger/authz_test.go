package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/handlers/httpapi"
)

// withKey makes a request with an X-API-Key (and a body, if any).
func (l *testLedger) withKey(t *testing.T, method, path, key string, body any) response {
	t.Helper()
	var h map[string]string
	if key != "" {
		h = map[string]string{"X-API-Key": key}
	}
	return doURL(t, l.URL(), method, path, "", h, body)
}

// createKey creates a service key with the bootstrap key and returns its id
// and raw key.
func (l *testLedger) createKey(t *testing.T, name string, scopes ...string) (id, key string) {
	t.Helper()
	r := l.withKey(t, "POST", "/v1/admin/keys", testAdminKey, map[string]any{"name": name, "scopes": scopes})
	if r.Status != http.StatusCreated {
		t.Fatalf("create key %s: %d %s", name, r.Status, r.Raw)
	}
	return r.str("response", "id"), r.str("response", "key")
}

// TestServiceKeysEndToEnd: keys made by the bootstrap key work for their
// scopes only, several are active at once (rotation without downtime), a
// revoked one is refused, and the log holds their hashes, never the keys.
func TestServiceKeysEndToEnd(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	auditID, auditKey := l.createKey(t, "auditor", "audit")
	if !regexp.MustCompile(`^sk_live_[A-Za-z0-9_-]{43}$`).MatchString(auditKey) {
		t.Fatalf("service key %q does not have the documented shape", auditKey)
	}
	adminID, adminKey := l.createKey(t, "ops", "admin")
	if r := l.withKey(t, "GET", "/v1/audit/digest", auditKey, nil); r.Status != 200 {
		t.Fatalf("audit key on audit: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "GET", "/v1/admin/keys", auditKey, nil); r.Status != 403 || r.str("reason") != "KEY_SCOPE_DENIED" {
		t.Fatalf("audit key on admin: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "GET", "/v1/audit/digest", adminKey, nil); r.Status != 403 || r.str("reason") != "KEY_SCOPE_DENIED" {
		t.Fatalf("admin key on audit: %d %s", r.Status, r.Raw)
	}
	// Rotation: a second audit key, made by the admin key, works alongside
	// the first until the first is revoked.
	r := l.withKey(t, "POST", "/v1/admin/keys", adminKey, map[string]any{"name": "auditor 2", "scopes": []string{"audit", "validate"}})
	if r.Status != 201 {
		t.Fatalf("admin key creates a key: %d %s", r.Status, r.Raw)
	}
	newAudit := r.str("response", "key")
	for _, k := range []string{auditKey, newAudit} {
		if r := l.withKey(t, "GET", "/v1/audit/digest", k, nil); r.Status != 200 {
			t.Fatalf("both keys during the rotation: %d %s", r.Status, r.Raw)
		}
	}
	if r := l.withKey(t, "DELETE", "/v1/admin/keys/"+auditID, adminKey, nil); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "GET", "/v1/audit/digest", auditKey, nil); r.Status != 401 || r.str("reason") != "API_KEY_INVALID" {
		t.Fatalf("revoked key: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "GET", "/v1/audit/digest", newAudit, nil); r.Status != 200 {
		t.Fatalf("new key after the revocation: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "DELETE", "/v1/admin/keys/"+auditID, adminKey, nil); r.Status != 200 {
		t.Fatalf("revoking again: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "DELETE", "/v1/admin/keys/nope", adminKey, nil); r.Status != 404 || r.str("reason") != "KEY_NOT_FOUND" {
		t.Fatalf("unknown key id: %d %s", r.Status, r.Raw)
	}
	for _, body := range []any{
		map[string]any{"name": "x", "scopes": []string{}},
		map[string]any{"name": "x", "scopes": []string{"root"}},
		map[string]any{"name": "", "scopes": []string{"audit"}},
		map[string]any{"name": "x"},
	} {
		if r := l.withKey(t, "POST", "/v1/admin/keys", adminKey, body); r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
			t.Errorf("bad key request %v: %d %s", body, r.Status, r.Raw)
		}
	}

	r = l.withKey(t, "GET", "/v1/admin/keys", adminKey, nil)
	keys, _ := r.get("keys").([]any)
	if r.Status != 200 || len(keys) != 3 || strings.Contains(r.Raw, "sk_live_") || strings.Contains(r.Raw, "key_hash") {
		t.Fatalf("list: %d %s", r.Status, r.Raw)
	}
	first := keys[0].(map[string]any)
	if first["id"] != auditID || first["status"] != "revoked" || first["revoked_by"] != "service_key:"+adminID || first["created_by"] != "service_key:bootstrap" {
		t.Fatalf("first key listed as %v", first)
	}

	events := l.events(t, eventstore.RegistrySubject(domain.ServiceKeysRegistry))
	var types []string
	for _, e := range events {
		types = append(types, string(e.Type))
		for _, k := range []string{auditKey, adminKey, newAudit} {
			if strings.Contains(string(e.Payload), k) || strings.Contains(string(e.Payload), k[len("sk_live_"):]) {
				t.Fatalf("a raw key is in the log: %s", e.Payload)
			}
		}
	}
	if strings.Join(types, " ") != "service_key_created service_key_created service_key_created service_key_revoked" {
		t.Fatalf("events on ledger.service-keys: %v", types)
	}
	p, _ := domain.DecodePayload[domain.ServiceKeyCreated](events[0])
	if p.KeyHash != domain.HashKey(auditKey).String() || p.Name != "auditor" || p.By != "service_key:bootstrap" {
		t.Fatalf("service_key_created payload: %+v", p)
	}

	// A restart rebuilds nothing by hand: the projection keeps the keys.
	l.stop()
	l2 := startLedger(t, l.cfg.DataDir, newClock())
	if r := l2.withKey(t, "GET", "/v1/audit/digest", newAudit, nil); r.Status != 200 {
		t.Fatalf("after a restart: %d %s", r.Status, r.Raw)
	}
	if r := l2.withKey(t, "GET", "/v1/audit/digest", auditKey, nil); r.Status != 401 {
		t.Fatalf("revoked key after a restart: %d %s", r.Status, r.Raw)
	}
}

// TestRolesAndAdminRevocations: a user made admin (by the bootstrap key)
// administers with their own token; validate reports roles and refuses
// ?require_role= of a higher one; admins revoke one session or all of a
// user's, with the revocation in the log and in the as-of audit.
func TestRolesAndAdminRevocations(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	annTok, annID, _ := l.signup(t, "ann@example.com", "ann password", true)
	bobTok, bobID, bobSID := l.signup(t, "bob@example.com", "bob password", true)
	bob2, bob2SID := l.login(t, "bob@example.com", "bob password", false)
	bob3, _ := l.login(t, "bob@example.com", "bob password", false)

	r := l.do(t, "GET", "/v1/validate?touch=false", annTok, nil)
	if r.Status != 200 || r.str("role") != "user" {
		t.Fatalf("validate: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/validate?require_role=admin", annTok, nil); r.Status != 403 || r.str("reason") != "ROLE_REQUIRED" {
		t.Fatalf("require_role=admin for a user: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/validate?require_role=root", annTok, nil); r.Status != 400 {
		t.Fatalf("require_role=root: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/admin/users/"+bobID+"/sessions", annTok, nil); r.Status != 403 || r.str("reason") != "ROLE_REQUIRED" {
		t.Fatalf("a user's token on an admin route: %d %s", r.Status, r.Raw)
	}

	r = l.withKey(t, "PUT", "/v1/admin/users/"+annID+"/role", testAdminKey, map[string]string{"role": "admin"})
	if r.Status != 200 || r.str("response", "role") != "admin" || r.str("response", "previous") != "user" {
		t.Fatalf("make ann admin: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/validate?require_role=admin", annTok, nil); r.Status != 200 || r.str("role") != "admin" {
		t.Fatalf("require_role=admin for an admin: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/validate?require_role=user", annTok, nil); r.Status != 200 {
		t.Fatalf("require_role=user for an admin: %d %s", r.Status, r.Raw)
	}
	r = doURL(t, l.URL(), "PUT", "/v1/admin/users/"+bobID+"/role", annTok, nil, map[string]string{"role": "guest"})
	if r.Status != 200 || r.str("response", "role") != "guest" {
		t.Fatalf("an admin's token sets a role: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/validate?require_role=user", bobTok, nil); r.Status != 403 || r.str("reason") != "ROLE_REQUIRED" {
		t.Fatalf("require_role=user for a guest: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/sessions", bobTok, nil); r.Status != 200 {
		t.Fatalf("a guest lists their own sessions: %d %s", r.Status, r.Raw)
	}
	for name, c := range map[string]struct {
		path, body string
		status     int
		reason     string
	}{
		"bad role":     {"/v1/admin/users/" + bobID + "/role", `{"role":"root"}`, 400, "INVALID_REQUEST"},
		"unknown user": {"/v1/admin/users/nobody/role", `{"role":"admin"}`, 404, "USER_NOT_FOUND"},
	} {
		if r := l.withKey(t, "PUT", c.path, testAdminKey, c.body); r.Status != c.status || r.str("reason") != c.reason {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}

	r = l.do(t, "GET", "/v1/admin/users/"+bobID+"/sessions?limit=2", annTok, nil)
	if sessions, _ := r.get("sessions").([]any); r.Status != 200 || len(sessions) != 2 || r.str("next_cursor") == "" {
		t.Fatalf("bob's sessions for an admin: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "GET", "/v1/admin/users/nobody/sessions", testAdminKey, nil); r.Status != 404 || r.str("reason") != "USER_NOT_FOUND" {
		t.Fatalf("sessions of an unknown user: %d %s", r.Status, r.Raw)
	}

	// One session, with a note.
	l.clock.Advance(1)
	r = doURL(t, l.URL(), "DELETE", "/v1/admin/sessions/"+bobSID, annTok, nil, map[string]string{"actor": "support desk", "note": "ticket 42"})
	if r.Status != 200 {
		t.Fatalf("admin revokes a session: %d %s", r.Status, r.Raw)
	}
	if v := l.verdict(t, bobTok); v.Status != 401 || v.Reason != "TOKEN_REVOKED" || v.Detail != "admin" {
		t.Fatalf("revoked by admin: %+v", v)
	}
	if v := l.verdict(t, bob2); v.Status != 200 {
		t.Fatalf("bob's other session: %+v", v)
	}
	a := l.admin(t, "/v1/audit/sessions/"+bobSID)
	exp, _ := a.get("explanation").([]any)
	if a.str("reason") != "revoked:admin" || len(exp) != 2 || !strings.Contains(a.str("summary"), "session_revoked_by_admin") ||
		!strings.Contains(a.str("summary"), "user:"+annID) || !strings.Contains(a.str("summary"), "ticket 42") {
		t.Fatalf("as-of audit of the admin revocation: %s", a.Raw)
	}
	if r := l.withKey(t, "DELETE", "/v1/admin/sessions/"+strings.Repeat("0", 32), testAdminKey, nil); r.Status != 404 || r.str("reason") != "SESSION_NOT_FOUND" {
		t.Fatalf("unknown session: %d %s", r.Status, r.Raw)
	}

	// All of a user's sessions.
	r = l.withKey(t, "POST", "/v1/admin/users/"+bobID+"/revoke-sessions", testAdminKey, nil)
	if r.Status != 200 || r.get("response", "revoked") != 2.0 {
		t.Fatalf("revoke all of bob's sessions: %d %s", r.Status, r.Raw)
	}
	for _, tok := range []string{bob2, bob3} {
		if v := l.verdict(t, tok); v.Detail != "admin" {
			t.Fatalf("after revoke-sessions: %+v", v)
		}
	}
	if r := l.withKey(t, "POST", "/v1/admin/users/"+bobID+"/revoke-sessions", testAdminKey, nil); r.get("response", "revoked") != 0.0 {
		t.Fatalf("nothing left to revoke: %s", r.Raw)
	}
	// Demoted, ann's token no longer administers.
	if r := l.withKey(t, "PUT", "/v1/admin/users/"+annID+"/role", testAdminKey, map[string]string{"role": "user"}); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	if r := l.do(t, "GET", "/v1/admin/users/"+bobID+"/sessions", annTok, nil); r.Status != 403 {
		t.Fatalf("a demoted admin: %d %s", r.Status, r.Raw)
	}

	var types []string
	for _, e := range l.events(t, eventstore.UserSubject(bobID)) {
		types = append(types, string(e.Type))
		if e.Type == domain.EventSessionRevokedByAdmin && e.SessionID == bob2SID {
			p, _ := domain.DecodePayload[domain.SessionRevokedByAdmin](e)
			if p.By != "service_key:bootstrap" {
				t.Errorf("revoke-sessions decided by %q", p.By)
			}
		}
	}
	want := "user_registered session_started session_started session_started user_role_changed session_revoked_by_admin session_revoked_by_admin session_revoked_by_admin"
	if strings.Join(types, " ") != want {
		t.Fatalf("bob's history: %v\nwant %s", types, want)
	}
}

// TestAppKeys: with --require-app-key, signup and login need a registered
// app's key; a revoked app's key stops working.
func TestAppKeys(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock(), func(c *ServiceConfig) { c.RequireAppKey = true })
	signup := func(key, email string) response {
		var h map[string]string
		if key != "" {
			h = map[string]string{"X-API-Key": key}
		}
		return doURL(t, l.URL(), "POST", "/v1/auth/signup", "", h, creds{email, "app password", false})
	}
	if r := signup("", "app@example.com"); r.Status != 401 || r.str("reason") != "APP_KEY_INVALID" {
		t.Fatalf("signup without an app key: %d %s", r.Status, r.Raw)
	}
	r := l.withKey(t, "POST", "/v1/admin/apps", testAdminKey, map[string]string{"name": "web"})
	if r.Status != 201 || !strings.HasPrefix(r.str("response", "key"), "pk_live_") {
		t.Fatalf("register app: %d %s", r.Status, r.Raw)
	}
	appID, appKey := r.str("response", "id"), r.str("response", "key")
	if r := signup(appKey, "app@example.com"); r.Status != 201 {
		t.Fatalf("signup with the app key: %d %s", r.Status, r.Raw)
	}
	for _, path := range []string{"/v1/auth/login", "/api/1.1/wf/generate-api-token"} {
		if r := doURL(t, l.URL(), "POST", path, "", map[string]string{"X-API-Key": appKey}, creds{"app@example.com", "app password", false}); r.Status != 200 {
			t.Fatalf("%s with the app key: %d %s", path, r.Status, r.Raw)
		}
		if r := l.do(t, "POST", path, "", creds{"app@example.com", "app password", false}); r.Status != 401 || r.str("reason") != "APP_KEY_INVALID" {
			t.Fatalf("%s without: %d %s", path, r.Status, r.Raw)
		}
	}
	if r := signup(testAdminKey, "x@example.com"); r.Status != 401 || r.str("reason") != "APP_KEY_INVALID" {
		t.Fatalf("a service key is no app key: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "GET", "/v1/admin/apps", testAdminKey, nil); r.Status != 200 || !strings.Contains(r.Raw, `"name":"web"`) || strings.Contains(r.Raw, appKey) {
		t.Fatalf("list apps: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "DELETE", "/v1/admin/apps/"+appID, testAdminKey, nil); r.Status != 200 {
		t.Fatalf("revoke app: %d %s", r.Status, r.Raw)
	}
	if r := signup(appKey, "app2@example.com"); r.Status != 401 || r.str("reason") != "APP_KEY_INVALID" {
		t.Fatalf("revoked app key: %d %s", r.Status, r.Raw)
	}
	if r := l.withKey(t, "DELETE", "/v1/admin/apps/nope", testAdminKey, nil); r.Status != 404 || r.str("reason") != "APP_NOT_FOUND" {
		t.Fatalf("unknown app: %d %s", r.Status, r.Raw)
	}
	var types []string
	for _, e := range l.events(t, eventstore.RegistrySubject(domain.AppsRegistry)) {
		types = append(types, string(e.Type))
	}
	if strings.Join(types, " ") != "app_registered app_revoked" {
		t.Fatalf("events on ledger.apps: %v", types)
	}
	// Without the flag, signup needs no key.
	l2 := startLedger(t, t.TempDir(), newClock())
	if r := l2.do(t, "POST", "/v1/auth/signup", "", creds{"free@example.com", "free password", false}); r.Status != 201 {
		t.Fatalf("signup without --require-app-key: %d %s", r.Status, r.Raw)
	}
}

// TestAccessTable walks every row of the API's access table against a
// real server: without credentials each route answers its 401 (and
// Everyone routes never a 401 or 403); a key without the route's scope
// gets 403 KEY_SCOPE_DENIED; a user's token on an admin route 403
// ROLE_REQUIRED; a token on a key-only route 401; the right credential
// gets past the check.
func TestAccessTable(t *testing.T) {
	// Each row tries an unknown key: more than the default failure burst.
	l := startLedger(t, t.TempDir(), newClock(), func(c *ServiceConfig) { c.AdminFailureBurst = 1000 })
	_, userID, userSID := l.signup(t, "table@example.com", "table password", true)
	adminTok, adminID, _ := l.signup(t, "boss@example.com", "boss password", true)
	_, erasedID, _ := l.signup(t, "erased@example.com", "erased password", true)
	if r := l.withKey(t, "PUT", "/v1/admin/users/"+adminID+"/role", testAdminKey, map[string]string{"role": "admin"}); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	_, validateOnly := l.createKey(t, "gateway", "validate")
	scoped := map[domain.Scope]string{}
	for _, s := range domain.Scopes {
		_, scoped[s] = l.createKey(t, "only "+string(s), string(s))
	}
	api := httpapi.New(httpapi.Config{Metrics: http.NotFoundHandler()})
	params := strings.NewReplacer("{id}", userSID, "{session_id}", userSID, "{user_id}", userID)
	rows := api.Routes()
	if len(rows) < 20 {
		t.Fatalf("the access table has %d rows", len(rows))
	}
	for _, rt := range rows {
		path := params.Replace(rt.Path)
		if strings.Contains(rt.Path, "/users/{id}") {
			path = strings.ReplaceAll(rt.Path, "{id}", userID)
		}
		if strings.HasSuffix(rt.Path, "/erase") {
			// Erasing the table's user would end its logins: a user of its own.
			path = strings.ReplaceAll(rt.Path, "{id}", erasedID)
		}
		req := func(token, key string) response {
			h := map[string]string{}
			if key != "" {
				h["X-API-Key"] = key
			}
			if rt.Path == httpapi.FeedPath {
				return streamStatus(t, l.URL()+path, h)
			}
			return doURL(t, l.URL(), rt.Method, path, token, h, nil)
		}
		name := rt.Pattern()
		// A fresh token per row: rows such as logout and revoke-sessions
		// end the sessions they are called about.
		userTok, _ := l.login(t, "table@example.com", "table password", true)
		r := req("", "")
		switch rt.Access {
		case httpapi.Everyone:
			// Validate's 401 is its verdict on the token it was asked
			// about, not a refusal of its caller.
			if r.Status == 403 || r.str("reason") == "API_KEY_REQUIRED" || r.Status == 401 && rt.Path != "/v1/validate" || r.str("reason") == "NOT_FOUND" {
				t.Errorf("%s (everyone) without credentials: %d %s", name, r.Status, r.Raw)
			}
			continue
		case httpapi.Users:
			if r.Status != 401 || r.str("reason") != "TOKEN_INVALID" {
				t.Errorf("%s (users) without credentials: %d %s", name, r.Status, r.Raw)
			}
			if r := req(userTok, ""); r.Status == 401 || r.Status == 403 {
				t.Errorf("%s (users) with a user's token: %d %s", name, r.Status, r.Raw)
			}
			if r := req("", testAdminKey); r.Status != 401 {
				t.Errorf("%s (users) with a service key only: %d %s", name, r.Status, r.Raw)
			}
			continue
		}
		if r.Status != 401 || r.str("reason") != "API_KEY_REQUIRED" {
			t.Errorf("%s without credentials: %d %s", name, r.Status, r.Raw)
		}
		if r := req("", "sk_live_"+strings.Repeat("A", 43)); r.Status != 401 || r.str("reason") != "API_KEY_INVALID" {
			t.Errorf("%s with an unknown key: %d %s", name, r.Status, r.Raw)
		}
		wrong := validateOnly
		if rt.Scope == domain.ScopeValidate {
			wrong = scoped[domain.ScopeAudit]
		}
		if r := req("", wrong); r.Status != 403 || r.str("reason") != "KEY_SCOPE_DENIED" {
			t.Errorf("%s with a key of another scope: %d %s", name, r.Status, r.Raw)
		}
		switch rt.Access {
		case httpapi.Admins:
			if r := req(userTok, ""); r.Status != 403 || r.str("reason") != "ROLE_REQUIRED" {
				t.Errorf("%s with a user's token: %d %s", name, r.Status, r.Raw)
			}
			if r := req(adminTok, ""); r.Status == 401 || r.Status == 403 {
				t.Errorf("%s with an admin's token: %d %s", name, r.Status, r.Raw)
			}
		case httpapi.Keys:
			if r := req(adminTok, ""); r.Status != 401 || r.str("reason") != "API_KEY_REQUIRED" {
				t.Errorf("%s (service keys only) with an admin's token: %d %s", name, r.Status, r.Raw)
			}
		}
		// Last: the right key may end the sessions the row is about.
		if r := req("", scoped[rt.Scope]); r.Status == 401 || r.Status == 403 {
			t.Errorf("%s with a key of scope %s: %d %s", name, rt.Scope, r.Status, r.Raw)
		}
	}
}

// TestServiceKeysAndRolesFromTheCLI: `ledger keys create|list|revoke` and
// `ledger users set-role` on a stopped server's data dir append the same
// events as the admin API; the server applies them when it starts again
// (the first admin is made this way), and they work through --nats-url
// against a running server too.
func TestServiceKeysAndRolesFromTheCLI(t *testing.T) {
	dir := t.TempDir()
	l := startLedger(t, dir, newClock())
	annTok, annID, _ := l.signup(t, "first-admin@example.com", "admin password", true)
	l.stop()

	flags := logFlags{DataDir: dir, Stream: "LEDGER"}
	quiet := outputFlags{LogLevel: "error", LogFormat: "text"}
	var out, status strings.Builder
	create := keysCreateCmd{logFlags: flags, outputFlags: quiet, Name: "ci deploys", Scopes: []string{"audit", "admin"}}
	if err := create.create(&out, &status); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(out.String())
	if !domain.IsServiceKey(key) || strings.Contains(status.String(), key) || !strings.Contains(status.String(), "printed once") {
		t.Fatalf("keys create printed %q, status %q", out.String(), status.String())
	}
	setRole := usersSetRoleCmd{logFlags: flags, outputFlags: quiet, User: annID, Role: "admin"}
	out.Reset()
	if err := setRole.setRole(&out); err != nil || !strings.Contains(out.String(), "role admin (was user)") {
		t.Fatalf("users set-role: %v %q", err, out.String())
	}
	if err := (&usersSetRoleCmd{logFlags: flags, outputFlags: quiet, User: "nobody", Role: "admin"}).setRole(&out); !errors.Is(err, domain.ErrUserNotFound) {
		t.Fatalf("set-role of an unknown user: %v", err)
	}
	create.Name, create.Scopes = "to revoke", []string{"validate"}
	out.Reset()
	if err := create.create(&out, io.Discard); err != nil {
		t.Fatal(err)
	}
	doomed := strings.TrimSpace(out.String())

	l2 := startLedger(t, dir, newClock(), listening)
	if r := l2.withKey(t, "GET", "/v1/audit/digest", key, nil); r.Status != 200 {
		t.Fatalf("a key made by the CLI: %d %s", r.Status, r.Raw)
	}
	if r := l2.do(t, "GET", "/v1/admin/keys", annTok, nil); r.Status != 200 || !strings.Contains(r.Raw, `"created_by":"operator:cli"`) {
		t.Fatalf("the first admin (made by the CLI) lists keys: %d %s", r.Status, r.Raw)
	}
	var doomedID string
	for _, k := range l2.withKey(t, "GET", "/v1/admin/keys", key, nil).get("keys").([]any) {
		if m := k.(map[string]any); m["name"] == "to revoke" {
			doomedID = m["id"].(string)
		}
	}
	// Through NATS while the server runs: the writer identity and the ring.
	remote := logFlags{DataDir: t.TempDir(), Stream: "LEDGER", NATSURL: l2.ll.emb.ClientURL(), SigningKeyFile: signingKeyPath(l2.cfg.LogConfig),
		natsAuthFlags: natsAuthFlags{NkeyFile: filepath.Join(dir, "nats", "writer.nk")}}
	out.Reset()
	if err := (&keysRevokeCmd{logFlags: remote, outputFlags: quiet, ID: doomedID}).revoke(&out); err != nil || !strings.Contains(out.String(), "revoked service key") {
		t.Fatalf("keys revoke over NATS: %v %q", err, out.String())
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := l2.withKey(t, "GET", "/v1/admin/keys", doomed, nil); r.Status != 401 {
			return fmt.Errorf("the key revoked by the CLI: %d %s", r.Status, r.Raw)
		}
		return nil
	})
	if err := (&keysRevokeCmd{logFlags: remote, outputFlags: quiet, ID: "nope"}).revoke(&out); !errors.Is(err, domain.ErrKeyNotFound) {
		t.Fatalf("revoking an unknown key: %v", err)
	}
	ll := openAuditLog(t, remote.config())
	ll.store.SetVerifier(nil)
	var list bytes.Buffer
	if err := listServiceKeys(context.Background(), ll.store, false, &list); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(list.String()), "\n"); len(lines) != 3 || !strings.Contains(lines[2], "revoked") ||
		!strings.Contains(lines[1], "admin,audit") || strings.Contains(list.String(), "sk_live_") {
		t.Fatalf("keys list:\n%s", list.String())
	}
	events := l2.events(t, eventstore.UserSubject(annID))
	if last := events[len(events)-1]; last.Type != domain.EventUserRoleChanged || !strings.Contains(string(last.Payload), `"by":"operator:cli"`) {
		t.Fatalf("ann's last event: %s %s", last.Type, last.Payload)
	}
}

// streamStatus is the status of a GET that may open an endless stream (the
// revocation feed): refusals are read whole, a 200 only up to its headers.
func streamStatus(t *testing.T, url string, header map[string]string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := response{Status: res.StatusCode, Header: res.Header}
	if res.StatusCode != 200 {
		raw, _ := io.ReadAll(res.Body)
		out.Raw = string(raw)
		_ = json.Unmarshal(raw, &out.Body)
	}
	return out
}
