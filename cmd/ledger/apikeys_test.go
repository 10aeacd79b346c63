package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/handlers/command"
)

type apiKeyCreds struct {
	Email  string `json:"email"`
	APIKey string `json:"api_key"`
}

// createAPIKey makes a key for the token's user and returns it and its id.
func (l *testLedger) createAPIKey(t *testing.T, token string, body any) (raw, id string) {
	t.Helper()
	r := l.do(t, "POST", "/v1/api-keys", token, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("create api key: %d %s", r.Status, r.Raw)
	}
	raw, id = r.str("response", "api_key"), r.str("response", "key_id")
	if !strings.HasPrefix(raw, "pak_"+id) || len(raw) != domain.APIKeyLen {
		t.Fatalf("created key %q, id %q", raw, id)
	}
	return raw, id
}

func (l *testLedger) exchange(t *testing.T, email, key string) response {
	t.Helper()
	return l.do(t, "POST", "/v1/auth/api-key", "", apiKeyCreds{email, key})
}

// auditEvents lists a user's events as the audit API shows them.
func (l *testLedger) auditEvents(t *testing.T, userID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range l.admin(t, "/v1/audit/users/"+userID+"/events").get("events").([]any) {
		out = append(out, e.(map[string]any)["event"].(map[string]any))
	}
	return out
}

// TestAPIKeyLifecycle: a logged-in user creates a key (shown once), lists
// it without its secret, exchanges it with the email for a session of
// method api_key (valid, listed, audited with the key's use), revokes it,
// and from then on the key fails exactly as a wrong password does.
func TestAPIKeyLifecycle(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	const email, pw = "keys@example.com", "keys password"
	tok, userID, _ := l.signup(t, email, pw, true)
	raw, id := l.createAPIKey(t, tok, map[string]any{"name": "CI deploy"})
	secret := raw[len("pak_")+32:]

	l.clock.Advance(time.Minute)
	r := l.exchange(t, "KEYS@example.com", raw)
	if r.Status != http.StatusOK || r.str("status") != "success" || r.str("response", "user_id") != userID || r.get("response", "expires") != float64(86400) {
		t.Fatalf("exchange: %d %s", r.Status, r.Raw)
	}
	keyTok, keySID := r.str("response", "token"), r.str("response", "session_id")
	v := l.do(t, "GET", "/v1/validate?touch=false", keyTok, nil)
	if v.Status != 200 || v.str("method") != "api_key" || v.str("session_id") != keySID {
		t.Fatalf("validate the key's session: %d %s", v.Status, v.Raw)
	}
	if v := l.do(t, "GET", "/v1/validate?touch=false", tok, nil); v.str("method") != "password" {
		t.Fatalf("validate the password session: %s", v.Raw)
	}
	_, items, _ := listAll(t, l, tok, "")
	methods := map[string]any{}
	for _, m := range items {
		methods[m["session_id"].(string)] = m["method"]
	}
	if methods[keySID] != "api_key" || len(methods) != 2 {
		t.Fatalf("session list methods %v", methods)
	}

	list := l.do(t, "GET", "/v1/api-keys", keyTok, nil) // any session of the user may list
	keys, _ := list.get("api_keys").([]any)
	if list.Status != 200 || len(keys) != 1 || strings.Contains(list.Raw, secret) || strings.Contains(list.Raw, raw) {
		t.Fatalf("list: %d %s", list.Status, list.Raw)
	}
	k := keys[0].(map[string]any)
	if k["key_id"] != id || k["name"] != "CI deploy" || k["status"] != "active" || k["hint"] != "pak_"+id[:8]+"…" ||
		k["last_used_at"] != l.clock.Now().Format(time.RFC3339) || k["expires_at"] != nil {
		t.Fatalf("listed key %v", k)
	}

	// The audit shows the key's history and the session it started.
	var got []string
	for _, e := range l.auditEvents(t, userID) {
		got = append(got, e["type"].(string))
		p := e["payload"].(map[string]any)
		if e["type"] == "session_started" && e["session_id"] == keySID && (p["method"] != "api_key" || p["api_key_id"] != id) {
			t.Fatalf("session_started of the key's session: %v", p)
		}
		if e["type"] == "api_key_created" && (p["key_id"] != id || !strings.HasPrefix(p["key_hash"].(string), "sha256:")) {
			t.Fatalf("api_key_created %v", p)
		}
	}
	if s := strings.Join(got, ","); s != "user_registered,session_started,api_key_created,api_key_used,session_started" {
		t.Fatalf("audit history %s", s)
	}
	asOf := l.admin(t, "/v1/audit/sessions/"+keySID)
	if asOf.get("valid") != true || asOf.get("explanation").([]any)[0].(map[string]any)["event"].(map[string]any)["payload"].(map[string]any)["method"] != "api_key" {
		t.Fatalf("as-of audit of the key's session: %s", asOf.Raw)
	}

	// Revoked: the key no longer works, answered like a wrong password.
	if r := l.do(t, "DELETE", "/v1/api-keys/"+id, tok, nil); r.Status != 200 || r.get("response", "seq") == nil {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	wrongPassword := l.do(t, "POST", "/v1/auth/login", "", creds{email, "not the password", false})
	for name, r := range map[string]response{
		"revoked key":          l.exchange(t, email, raw),
		"unknown email":        l.exchange(t, "nobody@example.com", raw),
		"malformed key":        l.exchange(t, email, "sk_live_123"),
		"a session token":      l.exchange(t, email, tok),
		"not an email, no key": l.exchange(t, "not an email", ""),
	} {
		if r.Status != 400 || r.Raw != wrongPassword.Raw {
			t.Errorf("%s: %d %s, want the wrong password's %d %s", name, r.Status, r.Raw, wrongPassword.Status, wrongPassword.Raw)
		}
	}
	if r := l.do(t, "DELETE", "/v1/api-keys/"+id, tok, nil); r.Status != 404 || r.str("reason") != "API_KEY_NOT_FOUND" {
		t.Fatalf("revoke twice: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/api-keys", tok, nil); r.Raw != "{\"api_keys\":[]}\n" {
		t.Fatalf("list after revoking: %s", r.Raw)
	}
	// Sessions already started with the key are sessions like any other:
	// revoking the key does not end them (log them out, or DELETE them).
	if v := l.verdict(t, keyTok); v.Status != 200 {
		t.Fatalf("the key's session after revoking the key: %+v", v)
	}
	var reasons []string
	for _, e := range l.auditEvents(t, userID) {
		if e["type"] == "login_failed" {
			reasons = append(reasons, e["payload"].(map[string]any)["reason"].(string))
		}
	}
	// The revoked, malformed and session-token keys on the account, and the wrong password.
	if strings.Join(reasons, ",") != "wrong_password,wrong_api_key,wrong_api_key,wrong_api_key" {
		t.Fatalf("login_failed reasons %v", reasons)
	}

	// Another user's key id is not found for this user.
	other, _, _ := l.signup(t, "other@example.com", pw, false)
	_, otherID := l.createAPIKey(t, other, map[string]any{"name": "theirs"})
	if r := l.do(t, "DELETE", "/v1/api-keys/"+otherID, tok, nil); r.Status != 404 || r.str("reason") != "API_KEY_NOT_FOUND" {
		t.Fatalf("revoking another user's key: %d %s", r.Status, r.Raw)
	}
}

// TestAPIKeyExpiry: a key's sessions end no later than the key, and the key
// fails from its expiry on; the list says it expired.
func TestAPIKeyExpiry(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	tok, _, _ := l.signup(t, "expiry@example.com", "expiry password", true)
	raw, _ := l.createAPIKey(t, tok, map[string]any{"name": "an hour", "expires_in": 3600})
	l.clock.Advance(10 * time.Minute)
	r := l.exchange(t, "expiry@example.com", raw)
	if r.Status != 200 || r.get("response", "expires") != float64(50*60) {
		t.Fatalf("exchange of a key with 50 minutes left: %d %s, want expires 3000", r.Status, r.Raw)
	}
	keyTok := r.str("response", "token")
	l.clock.Advance(50 * time.Minute)
	if r := l.exchange(t, "expiry@example.com", raw); r.Status != 400 || r.str("reason") != "INVALID_LOGIN_CREDENTIALS" {
		t.Fatalf("exchange at the key's expiry: %d %s", r.Status, r.Raw)
	}
	if v := l.verdict(t, keyTok); v.Reason != "TOKEN_EXPIRED" || v.Detail != "max" {
		t.Fatalf("the key's session at the key's expiry: %+v", v)
	}
	list := l.do(t, "GET", "/v1/api-keys", tok, nil)
	if k := list.get("api_keys").([]any)[0].(map[string]any); k["status"] != "expired" || k["expires_at"] != l.clock.Now().Format(time.RFC3339) {
		t.Fatalf("list: %s", list.Raw)
	}
}

// TestAPIKeyCapAndRequests: a user holds at most 20 keys that are not
// revoked; malformed requests are 400, and the key routes need a token.
func TestAPIKeyCapAndRequests(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	tok, _, _ := l.signup(t, "cap@example.com", "cap password", true)
	var ids []string
	for i := range domain.DefaultMaxAPIKeysPerUser {
		_, id := l.createAPIKey(t, tok, map[string]any{"name": fmt.Sprintf("key %d", i)})
		ids = append(ids, id)
	}
	r := l.do(t, "POST", "/v1/api-keys", tok, map[string]any{"name": "one too many"})
	if r.Status != 409 || r.str("reason") != "TOO_MANY_API_KEYS" {
		t.Fatalf("key %d: %d %s", domain.DefaultMaxAPIKeysPerUser+1, r.Status, r.Raw)
	}
	if r := l.do(t, "DELETE", "/v1/api-keys/"+ids[3], tok, nil); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	l.createAPIKey(t, tok, map[string]any{"name": "in the freed slot"})
	if n := len(l.do(t, "GET", "/v1/api-keys", tok, nil).get("api_keys").([]any)); n != domain.DefaultMaxAPIKeysPerUser {
		t.Fatalf("listed %d keys", n)
	}

	for name, body := range map[string]string{
		"no name":         `{}`,
		"empty name":      `{"name":""}`,
		"long name":       `{"name":"` + strings.Repeat("x", 101) + `"}`,
		"zero expiry":     `{"name":"x","expires_in":0}`,
		"past expiry":     `{"name":"x","expires_in":-5}`,
		"expiry too long": `{"name":"x","expires_in":315360001}`,
		"expiry as text":  `{"name":"x","expires_in":"1h"}`,
		"unknown field":   `{"name":"x","scope":"all"}`,
	} {
		if r := l.do(t, "POST", "/v1/api-keys", tok, body); r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	for _, req := range []struct{ method, path string }{{"GET", "/v1/api-keys"}, {"POST", "/v1/api-keys"}, {"DELETE", "/v1/api-keys/" + ids[0]}} {
		if r := l.do(t, req.method, req.path, "", nil); r.Status != 401 || r.str("reason") != "TOKEN_INVALID" {
			t.Errorf("%s %s without a token: %d %s", req.method, req.path, r.Status, r.Raw)
		}
	}
	if r := l.do(t, "PUT", "/v1/api-keys", tok, nil); r.Status != 405 || r.Header.Get("Allow") != "GET, POST" {
		t.Errorf("PUT /v1/api-keys: %d %s, Allow %q", r.Status, r.Raw, r.Header.Get("Allow"))
	}
	if r := l.do(t, "DELETE", "/v1/api-keys/not-a-key-id", tok, nil); r.Status != 404 || r.str("reason") != "API_KEY_NOT_FOUND" {
		t.Errorf("DELETE of a made-up id: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/api-key", "", `{"email":"cap@example.com"}`); r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
		t.Errorf("exchange without api_key: %d %s", r.Status, r.Raw)
	}
}

// TestWrongAPIKeysAreThrottled: wrong keys throttle the account as wrong
// passwords do (the same count, the same 429, for the right key and the
// right password alike), unknown emails are answered identically, every
// failure takes at least the failure floor, and the route is under the
// per-address limit.
func TestWrongAPIKeysAreThrottled(t *testing.T) {
	rule := domain.LoginThrottle{After: 3, Window: time.Hour, Base: 30 * time.Second, Max: 2 * time.Minute}
	l := startLedger(t, t.TempDir(), newClock(), withThrottle(rule))
	tok, userID, _ := l.signup(t, "guessed@example.com", "guessed password", true)
	raw, _ := l.createAPIKey(t, tok, map[string]any{"name": "ci"})
	wrong := raw[:len(raw)-3] + "AAA"
	if wrong == raw {
		wrong = raw[:len(raw)-3] + "AAQ"
	}
	for i := 1; i <= 3; i++ {
		for _, email := range []string{"guessed@example.com", "ghost@example.com"} {
			start := time.Now()
			r := l.exchange(t, email, wrong)
			if r.Status != 400 || r.str("reason") != "INVALID_LOGIN_CREDENTIALS" {
				t.Fatalf("%s, wrong key %d: %d %s", email, i, r.Status, r.Raw)
			}
			if d := time.Since(start); d < command.APIKeyFailureFloor {
				t.Fatalf("%s, wrong key %d answered in %s, under the %s floor", email, i, d, command.APIKeyFailureFloor)
			}
		}
	}
	known, unknown := l.exchange(t, "guessed@example.com", raw), l.exchange(t, "ghost@example.com", raw)
	if known.Status != 429 || known.str("reason") != "TOO_MANY_ATTEMPTS" || known.Header.Get("Retry-After") != "30" {
		t.Fatalf("the right key while throttled: %d %s", known.Status, known.Raw)
	}
	if unknown.Raw != known.Raw || unknown.Header.Get("Retry-After") != known.Header.Get("Retry-After") {
		t.Fatalf("unknown email %s, the account %s", unknown.Raw, known.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/login", "", creds{"guessed@example.com", "guessed password", false}); r.Status != 429 {
		t.Fatalf("the right password while throttled by wrong keys: %d %s", r.Status, r.Raw)
	}
	if v := l.verdict(t, tok); v.Status != 200 {
		t.Fatalf("the account's session: %+v", v)
	}
	var failed []string
	for _, e := range l.auditEvents(t, userID) {
		if e["type"] == "login_failed" || e["type"] == "login_throttled" {
			failed = append(failed, fmt.Sprint(e["type"], e["payload"].(map[string]any)["reason"]))
		}
	}
	if s := strings.Join(failed, ","); s != "login_failedwrong_api_key,login_failedwrong_api_key,login_failedwrong_api_key,login_throttled<nil>" {
		t.Fatalf("failures in the log: %s", s)
	}
	l.clock.Advance(30 * time.Second)
	if r := l.exchange(t, "guessed@example.com", raw); r.Status != 200 {
		t.Fatalf("the right key once the throttle lifted: %d %s", r.Status, r.Raw)
	}
	if n := len(l.events(t, eventstore.UserSubject(userID))); n == 0 {
		t.Fatal("no events")
	}

	// The exchange is a credential route: one address gets a burst of them.
	m := startLedger(t, t.TempDir(), newClock(), func(c *ServiceConfig) { c.AddressRate, c.AddressBurst = 0.001, 2 })
	for i, want := range []int{400, 400, 429} {
		if r := m.exchange(t, "a@example.com", wrong); r.Status != want {
			t.Fatalf("exchange %d from one address: %d %s, want %d", i+1, r.Status, r.Raw, want)
		}
	}
}
