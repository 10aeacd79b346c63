package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// auditEmails are the emails GET /v1/audit/users/{id}/events shows for a
// user's registrations.
func auditEmails(t *testing.T, l *testLedger, userID string) []string {
	t.Helper()
	r := l.admin(t, "/v1/audit/users/"+userID+"/events")
	if r.Status != 200 {
		t.Fatalf("audit events: %d %s", r.Status, r.Raw)
	}
	var out []string
	for _, e := range r.get("events").([]any) {
		m := e.(map[string]any)
		if ev, _ := m["event"].(map[string]any); ev["type"] == string(domain.EventUserRegistered) {
			s, _ := m["email"].(string)
			out = append(out, s)
		}
	}
	return out
}

// TestEraseUserEndToEnd: register, see the email in the audit, erase over
// HTTP: the user's sessions are revoked (validate: revoked, user_erased;
// the feed and the as-of audit agree), the audit shows "(erased)", the log
// still verifies, the old password fails like an unknown email, and the
// same email signs up again as a new user.
func TestEraseUserEndToEnd(t *testing.T) {
	dir := t.TempDir()
	l := startLedger(t, dir, newClock(), func(c *ServiceConfig) { c.DataKeyCacheTTL = 50 * time.Millisecond })
	tok, uid, sid := l.signup(t, "Erase.Me@example.com", "erase me please", true)
	tok2, _ := l.login(t, "erase.me@example.com", "erase me please", false)
	if got := auditEmails(t, l, uid); len(got) != 1 || got[0] != "erase.me@example.com" {
		t.Fatalf("audit before erasure shows %q", got)
	}
	// Only admins erase.
	if r := l.do(t, "POST", "/v1/admin/users/"+uid+"/erase", tok, nil); r.Status != 403 {
		t.Fatalf("a user erasing: %d %s", r.Status, r.Raw)
	}
	l.clock.Advance(time.Minute)
	r := l.withKey(t, "POST", "/v1/admin/users/"+uid+"/erase", testAdminKey, nil)
	if r.Status != 200 || r.get("response", "revoked") != 2.0 || r.get("response", "already_erased") != false || r.str("response", "user_id") != uid {
		t.Fatalf("erase: %d %s", r.Status, r.Raw)
	}
	for _, tk := range []string{tok, tok2} {
		if v := l.verdict(t, tk); v.Status != 401 || v.Reason != "TOKEN_REVOKED" || v.Detail != "user_erased" {
			t.Fatalf("validate after erasure: %+v", v)
		}
	}
	if a := l.admin(t, "/v1/audit/sessions/"+sid); a.str("reason") != "revoked:user_erased" || !strings.Contains(a.str("summary"), "erased by service_key:bootstrap") {
		t.Fatalf("as-of audit: %s", a.Raw)
	}
	if got := auditEmails(t, l, uid); len(got) != 1 || got[0] != "(erased)" {
		t.Fatalf("audit after erasure shows %q", got)
	}
	revs := l.withKey(t, "GET", "/v1/admin/users/"+uid+"/sessions?status=all", testAdminKey, nil)
	if !strings.Contains(revs.Raw, "revoked:user_erased") {
		t.Fatalf("session list: %s", revs.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/login", "", creds{"erase.me@example.com", "erase me please", false}); r.Status != 400 || r.str("reason") != "INVALID_LOGIN_CREDENTIALS" {
		t.Fatalf("login after erasure: %d %s", r.Status, r.Raw)
	}
	// Again: nothing appended.
	seq := l.lastSeq(t)
	if r := l.withKey(t, "POST", "/v1/admin/users/"+uid+"/erase", testAdminKey, nil); r.Status != 200 || r.get("response", "already_erased") != true {
		t.Fatalf("erase again: %d %s", r.Status, r.Raw)
	}
	if l.lastSeq(t) != seq {
		t.Fatal("erasing again appended")
	}
	if r := l.withKey(t, "POST", "/v1/admin/users/nobody/erase", testAdminKey, nil); r.Status != 404 || r.str("reason") != "USER_NOT_FOUND" {
		t.Fatalf("erase of an unknown user: %d %s", r.Status, r.Raw)
	}
	// The email is free again.
	_, uid2, _ := l.signup(t, "erase.me@example.com", "a new life here", true)
	if uid2 == uid {
		t.Fatal("the new signup got the erased user's id")
	}
	if got := auditEmails(t, l, uid2); len(got) != 1 || got[0] != "erase.me@example.com" {
		t.Fatalf("audit of the new user shows %q", got)
	}
	if r := l.do(t, "POST", "/v1/auth/signup", "", creds{"erase.me@example.com", "a third one", true}); r.Status != 409 {
		t.Fatalf("a third signup: %d %s", r.Status, r.Raw)
	}
	cfg := l.cfg.LogConfig
	l.stop()

	// The CLI: the log still verifies; history shows the erased email as
	// (erased), by user and by email (which follows the claim in force).
	ctx := context.Background()
	ll := openAuditLog(t, cfg)
	var out bytes.Buffer
	if err := auditVerify(ctx, ll.store, nil, publicKeys(t, cfg), false, false, &out); err != nil || !strings.HasPrefix(out.String(), "OK:") {
		t.Fatalf("verify after erasure: %v %q", err, out.String())
	}
	secrets := secretsForAudit(ctx, ll, cfg)
	if secrets == nil {
		t.Fatal("the audit found no data keys in the data dir")
	}
	out.Reset()
	if err := auditHistory(ctx, auditSource{store: ll.store}, secrets, uid, "", "", time.Time{}, time.Time{}, false, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "user_registered") || !strings.Contains(out.String(), "email=(erased)") || !strings.Contains(out.String(), "user_erased") {
		t.Fatalf("history of the erased user:\n%s", out.String())
	}
	out.Reset()
	if err := auditHistory(ctx, auditSource{store: ll.store}, secrets, "", "", "erase.me@example.com", time.Time{}, time.Time{}, true, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"email":"erase.me@example.com"`) || !strings.Contains(out.String(), uid2) {
		t.Fatalf("history by email:\n%s", out.String())
	}
	out.Reset()
	if err := auditHistory(ctx, auditSource{store: ll.store}, nil, uid2, "", "", time.Time{}, time.Time{}, false, &out); err != nil || !strings.Contains(out.String(), "email=(sealed)") {
		t.Fatalf("history without data keys: %v\n%s", err, out.String())
	}
}

// TestUsersEraseCLI: `ledger users erase` on a stopped data dir appends the
// erasure and destroys the key; the server, restarted, folds it.
func TestUsersEraseCLI(t *testing.T) {
	dir := t.TempDir()
	// The CLI decides on the wall clock: so does this ledger.
	l := startLedger(t, dir, &fakeClock{t: time.Now().UTC()})
	tok, uid, _ := l.signup(t, "cli.erase@example.com", "erase me please", true)
	cfg := l.cfg
	l.stop()

	flags := logFlags{DataDir: dir, Stream: cfg.Stream}
	quiet := outputFlags{LogLevel: "error", LogFormat: "text"}
	var out bytes.Buffer
	if err := (&usersEraseCmd{logFlags: flags, outputFlags: quiet, User: uid}).erase(&out); err != nil || !strings.Contains(out.String(), "1 live sessions revoked") {
		t.Fatalf("users erase: %v %q", err, out.String())
	}
	out.Reset()
	if err := (&usersEraseCmd{logFlags: flags, outputFlags: quiet, User: uid}).erase(&out); err != nil || !strings.Contains(out.String(), "already erased") {
		t.Fatalf("users erase again: %v %q", err, out.String())
	}
	if err := (&usersEraseCmd{logFlags: flags, outputFlags: quiet, User: "nobody"}).erase(&out); err == nil {
		t.Fatal("erasing an unknown user succeeded")
	}
	l.clock.Advance(time.Hour)
	l2 := startLedger(t, dir, l.clock, func(c *ServiceConfig) { *c = cfg })
	if v := l2.verdict(t, tok); v.Reason != "TOKEN_REVOKED" || v.Detail != "user_erased" {
		t.Fatalf("validate after the CLI's erasure: %+v", v)
	}
	var events []map[string]any
	r := l2.admin(t, "/v1/audit/users/"+uid+"/events")
	raw, _ := json.Marshal(r.get("events"))
	_ = json.Unmarshal(raw, &events)
	if len(events) == 0 || events[0]["email"] != "(erased)" {
		t.Fatalf("audit after the CLI's erasure: %s", r.Raw)
	}
	if last := events[len(events)-1]["event"].(map[string]any); last["type"] != "user_erased" || fmt.Sprint(last["payload"]) != "map[by:operator:cli]" {
		t.Fatalf("last event: %v", last)
	}
}
