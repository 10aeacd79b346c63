package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// TestHTTPContract walks the whole documented API, including every error.
// The subtests share one ledger and nothing else: each signs up the users
// it needs, under emails of its own, and only ever moves the clock forward
// from wherever it finds it, so each passes alone.
func TestHTTPContract(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	const pw = "correct horse battery"

	t.Run("signup", func(t *testing.T) {
		r := l.do(t, "POST", "/v1/auth/signup", "", creds{"Ann@Example.com", pw, true})
		if r.Status != 201 || r.str("status") != "success" {
			t.Fatalf("signup: %d %s", r.Status, r.Raw)
		}
		for _, f := range []string{"token", "user_id", "session_id"} {
			if r.str("response", f) == "" {
				t.Errorf("signup response lacks %s: %s", f, r.Raw)
			}
		}
		if got := r.get("response", "expires"); got != float64(31536000) {
			t.Errorf("keep_logged_in expires = %v, want 31536000", got)
		}
		r = l.do(t, "POST", "/v1/auth/signup", "", creds{"short@example.com", pw, false})
		if got := r.get("response", "expires"); r.Status != 201 || got != float64(86400) {
			t.Errorf("plain signup: %d expires %v, want 201 and 86400", r.Status, got)
		}
		r = l.do(t, "POST", "/v1/auth/signup", "", map[string]any{"email": "nokeep@example.com", "password": pw})
		if r.Status != 201 {
			t.Errorf("signup without keep_logged_in: %d %s", r.Status, r.Raw)
		}
	})

	t.Run("login", func(t *testing.T) {
		l.signup(t, "Lin@Example.com", pw, false)
		for _, path := range []string{"/v1/auth/login", "/api/1.1/wf/generate-api-token"} {
			r := l.do(t, "POST", path, "", creds{"lin@EXAMPLE.com", pw, true})
			if r.Status != 200 || r.str("status") != "success" || r.str("response", "token") == "" || r.get("response", "expires") != float64(31536000) {
				t.Errorf("%s: %d %s", path, r.Status, r.Raw)
			}
		}
		// Seed 004 (Euler): {email, password} on Bubble's workflow path
		// gets a year; the plain login route keeps its 24 h default.
		for path, want := range map[string]float64{"/api/1.1/wf/generate-api-token": 31536000, "/v1/auth/login": 86400} {
			r := l.do(t, "POST", path, "", map[string]string{"email": "lin@example.com", "password": pw})
			if r.Status != 200 || r.get("response", "expires") != want {
				t.Errorf("%s without keep_logged_in: %d %s, want expires %v", path, r.Status, r.Raw, want)
			}
		}
		// Error bodies carry args, {} when there are none (seed 004).
		r := l.do(t, "POST", "/api/1.1/wf/generate-api-token", "", map[string]string{"email": "lin@example.com", "password": "not the password"})
		if args, ok := r.get("args").(map[string]any); r.Status != 400 || !ok || len(args) != 0 {
			t.Errorf("wrong password: %d %s, want 400 with \"args\":{}", r.Status, r.Raw)
		}
	})

	t.Run("validate", func(t *testing.T) {
		tok, uid, sid := l.signup(t, "val@example.com", pw, true)
		r := l.do(t, "GET", "/v1/validate", tok, nil)
		if r.Status != 200 || r.get("valid") != true || r.str("user_id") != uid || r.str("session_id") != sid ||
			r.get("keep_logged_in") != true || r.get("mfa") != false {
			t.Fatalf("validate: %d %s", r.Status, r.Raw)
		}
		now := l.clock.Now()
		for field, want := range map[string]time.Time{
			"expires_at":      now.Add(30 * domain.Day),
			"idle_expires_at": now.Add(30 * domain.Day),
			"max_expires_at":  now.Add(365 * domain.Day),
		} {
			got, err := time.Parse(time.RFC3339, r.str(field))
			if err != nil || !got.Equal(want) {
				t.Errorf("%s = %q, want %s", field, r.str(field), want.Format(time.RFC3339))
			}
		}
		if r.Header.Get("X-Ledger-User-Id") != uid {
			t.Errorf("X-Ledger-User-Id = %q", r.Header.Get("X-Ledger-User-Id"))
		}
	})

	t.Run("validate rejects bad tokens as TOKEN_INVALID", func(t *testing.T) {
		tok, _, _ := l.signup(t, "bad@example.com", pw, false)
		wrongSecret := tok[:len(tok)-2] + "AA"
		if wrongSecret == tok {
			wrongSecret = tok[:len(tok)-2] + "BA"
		}
		unknown := "slt_" + strings.Repeat("0", 32) + tok[36:]
		for name, token := range map[string]string{
			"no header": "", "malformed": "hello", "unknown session": unknown, "wrong secret": wrongSecret,
		} {
			r := l.do(t, "GET", "/v1/validate", token, nil)
			if r.Status != 401 || r.str("reason") != "TOKEN_INVALID" || r.get("statusCode") != float64(401) || r.str("message") == "" {
				t.Errorf("%s: %d %s", name, r.Status, r.Raw)
			}
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: no WWW-Authenticate header", name)
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		l.signup(t, "Taken@Example.com", pw, false)
		before := l.lastSeq(t)
		big := `{"email":"x@example.com","password":"` + strings.Repeat("a", 1<<20) + `"}`
		cases := []struct {
			name, method, path, body string
			status                   int
			reason                   string
		}{
			{"malformed JSON", "POST", "/v1/auth/signup", `{"email":`, 400, "INVALID_REQUEST"},
			{"not an object", "POST", "/v1/auth/login", `[1,2]`, 400, "INVALID_REQUEST"},
			{"empty body", "POST", "/v1/auth/signup", ``, 400, "INVALID_REQUEST"},
			{"trailing data", "POST", "/v1/auth/signup", `{"email":"t@example.com","password":"12345678"} {}`, 400, "INVALID_REQUEST"},
			{"missing password", "POST", "/v1/auth/signup", `{"email":"m@example.com"}`, 400, "INVALID_REQUEST"},
			{"missing email", "POST", "/v1/auth/login", `{"password":"12345678"}`, 400, "INVALID_REQUEST"},
			{"wrong type", "POST", "/v1/auth/signup", `{"email":"w@example.com","password":"12345678","keep_logged_in":"yes"}`, 400, "INVALID_REQUEST"},
			{"invalid email", "POST", "/v1/auth/signup", `{"email":"not-an-email","password":"12345678"}`, 400, "INVALID_EMAIL"},
			{"weak password", "POST", "/v1/auth/signup", `{"email":"weak@example.com","password":"1234567"}`, 400, "WEAK_PASSWORD"},
			{"email taken, other case", "POST", "/v1/auth/signup", `{"email":"TAKEN@example.COM","password":"another password"}`, 409, "EMAIL_TAKEN"},
			{"body over 1 MiB", "POST", "/v1/auth/signup", big, 413, "BODY_TOO_LARGE"},
			{"non-JSON body over 1 MiB", "POST", "/v1/auth/signup", strings.Repeat("x", 1<<20+1), 413, "BODY_TOO_LARGE"},
			{"field name in another case", "POST", "/v1/auth/login", `{"EMAIL":"taken@example.com","PassWord":"` + pw + `"}`, 400, "INVALID_REQUEST"},
			{"unknown field", "POST", "/v1/auth/signup", `{"email":"u@example.com","password":"12345678","role":"admin"}`, 400, "INVALID_REQUEST"},
			{"duplicate field", "POST", "/v1/auth/login", `{"email":"taken@example.com","password":"x","password":"` + pw + `"}`, 400, "INVALID_REQUEST"},
			{"invalid UTF-8", "POST", "/v1/auth/signup", "{\"email\":\"utf@example.com\",\"password\":\"12345678\xff\"}", 400, "INVALID_REQUEST"},
			{"wrong method on login", "GET", "/v1/auth/login", ``, 405, "METHOD_NOT_ALLOWED"},
			{"wrong method on validate", "POST", "/v1/validate", ``, 405, "METHOD_NOT_ALLOWED"},
			{"wrong method on sessions", "PUT", "/v1/sessions/abc", ``, 405, "METHOD_NOT_ALLOWED"},
			{"unknown path", "GET", "/v2/nothing", ``, 404, "NOT_FOUND"},
		}
		for _, c := range cases {
			r := l.do(t, c.method, c.path, "", c.body)
			if r.Status != c.status || r.str("reason") != c.reason || r.get("statusCode") != float64(c.status) || r.str("message") == "" {
				t.Errorf("%s: got %d %s, want %d %s", c.name, r.Status, r.Raw, c.status, c.reason)
			}
		}
		// The media type: what a form post or a bare curl -d sends.
		r, err := request(context.Background(), l.URL(), "POST", "/v1/auth/login", "",
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, `{"email":"taken@example.com","password":"`+pw+`"}`)
		if err != nil || r.Status != 415 || r.str("reason") != "UNSUPPORTED_MEDIA_TYPE" {
			t.Errorf("a JSON body sent as a form: %v %d %s, want 415 UNSUPPORTED_MEDIA_TYPE", err, r.Status, r.Raw)
		}
		if after := l.lastSeq(t); after != before {
			t.Errorf("rejected requests appended %d events", after-before)
		}
	})

	t.Run("failed logins look alike and are recorded", func(t *testing.T) {
		l.signup(t, "Fay@Example.com", pw, false)
		before := l.lastSeq(t)
		wrong := l.do(t, "POST", "/v1/auth/login", "", creds{"fay@example.com", "wrong password", false})
		unknown := l.do(t, "POST", "/v1/auth/login", "", creds{"nobody@example.com", pw, false})
		for name, r := range map[string]response{"wrong password": wrong, "unknown email": unknown} {
			if r.Status != 400 || r.str("reason") != "INVALID_LOGIN_CREDENTIALS" {
				t.Errorf("%s: %d %s", name, r.Status, r.Raw)
			}
		}
		if wrong.str("message") != unknown.str("message") {
			t.Errorf("messages differ: %q vs %q", wrong.str("message"), unknown.str("message"))
		}
		// The wrong password is a fact of the account's history; the
		// unknown email only a count in the next tally (written at the
		// latest when the instance stops).
		if got := l.lastSeq(t) - before; got != 1 {
			t.Fatalf("failed logins appended %d events, want 1 login_failed", got)
		}
		fay := l.events(t, "")
		last := fay[len(fay)-1]
		p, err := domain.DecodePayload[domain.LoginFailed](last)
		if err != nil || last.Type != domain.EventLoginFailed || p.Reason != domain.LoginFailedWrongPassword || p.EmailHash != domain.EmailHash("fay@example.com") || p.InARow != 1 {
			t.Errorf("wrong-password event = %+v %+v %v", last, p, err)
		}
		if err := l.unknown.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		anon := l.events(t, eventstore.AnonSubject)
		tally, err := domain.DecodePayload[domain.LoginFailuresTallied](anon[len(anon)-1])
		if err != nil || anon[len(anon)-1].Type != domain.EventLoginFailuresTallied || tally.Failures != 1 || tally.Emails != 1 {
			t.Errorf("unknown-email tally = %+v %v", anon[len(anon)-1], err)
		}
	})

	t.Run("logout", func(t *testing.T) {
		tok, _, _ := l.signup(t, "out@example.com", pw, true)
		r := l.do(t, "POST", "/v1/auth/logout", tok, nil)
		if r.Status != 200 || r.str("status") != "success" {
			t.Fatalf("logout: %d %s", r.Status, r.Raw)
		}
		r = l.do(t, "GET", "/v1/validate", tok, nil)
		if r.Status != 401 || r.str("reason") != "TOKEN_REVOKED" || r.str("revoked_by") != "logout" {
			t.Fatalf("validate after logout: %d %s", r.Status, r.Raw)
		}
		if r := l.do(t, "POST", "/v1/auth/logout", tok, nil); r.Status != 401 || r.str("reason") != "TOKEN_REVOKED" {
			t.Errorf("second logout: %d %s", r.Status, r.Raw)
		}
		if r := l.do(t, "POST", "/v1/auth/logout", "", nil); r.Status != 401 || r.str("reason") != "TOKEN_INVALID" {
			t.Errorf("logout without token: %d %s", r.Status, r.Raw)
		}
	})

	t.Run("logout others keeps the caller", func(t *testing.T) {
		keep, _, keepSID := l.signup(t, "multi@example.com", pw, true)
		other1, _ := l.login(t, "multi@example.com", pw, false)
		other2, _ := l.login(t, "multi@example.com", pw, true)
		stranger, _, _ := l.signup(t, "stranger@example.com", pw, true)
		r := l.do(t, "POST", "/v1/auth/logout-others", keep, nil)
		if r.Status != 200 || r.get("response", "revoked") != float64(2) {
			t.Fatalf("logout-others: %d %s", r.Status, r.Raw)
		}
		for _, tok := range []string{other1, other2} {
			if v := l.verdict(t, tok); v.Status != 401 || v.Reason != "TOKEN_REVOKED" || v.Detail != "revoke_others" {
				t.Errorf("other session: %+v", v)
			}
		}
		if v := l.verdict(t, keep); v.Status != 200 {
			t.Errorf("caller's session: %+v", v)
		}
		if v := l.verdict(t, stranger); v.Status != 200 {
			t.Errorf("another user's session: %+v", v)
		}
		r = l.do(t, "POST", "/v1/auth/logout-others", keep, nil)
		if r.Status != 200 || r.get("response", "revoked") != float64(0) {
			t.Errorf("second logout-others: %d %s", r.Status, r.Raw)
		}
		r = l.do(t, "GET", "/v1/sessions?status=all", keep, nil)
		list, _ := r.get("sessions").([]any)
		if r.Status != 200 || len(list) != 3 {
			t.Fatalf("sessions: %d %s", r.Status, r.Raw)
		}
		current := 0
		for _, item := range list {
			m := item.(map[string]any)
			for _, f := range []string{"session_id", "created_at", "last_used_at", "expires_at", "status", "current"} {
				if _, ok := m[f]; !ok {
					t.Errorf("session item lacks %s: %v", f, m)
				}
			}
			if m["current"] == true {
				current++
				if m["session_id"] != keepSID || m["status"] != "active" {
					t.Errorf("current session item: %v", m)
				}
			} else if m["status"] != "revoked" {
				t.Errorf("revoked session item: %v", m)
			}
		}
		if current != 1 {
			t.Errorf("%d sessions marked current", current)
		}
	})

	t.Run("terminate a session by id", func(t *testing.T) {
		a, _, _ := l.signup(t, "term@example.com", pw, true)
		b, bSID := l.login(t, "term@example.com", pw, true)
		_, _, strangerSID := l.signup(t, "term-stranger@example.com", pw, true)
		if r := l.do(t, "DELETE", "/v1/sessions/"+strangerSID, a, nil); r.Status != 404 || r.str("reason") != "SESSION_NOT_FOUND" {
			t.Errorf("terminate another user's session: %d %s", r.Status, r.Raw)
		}
		if r := l.do(t, "DELETE", "/v1/sessions/"+strings.Repeat("a", 32), a, nil); r.Status != 404 {
			t.Errorf("terminate unknown session: %d %s", r.Status, r.Raw)
		}
		if r := l.do(t, "DELETE", "/v1/sessions/not-an-id", a, nil); r.Status != 404 {
			t.Errorf("terminate malformed id: %d %s", r.Status, r.Raw)
		}
		if r := l.do(t, "DELETE", "/v1/sessions/"+bSID, a, nil); r.Status != 200 {
			t.Fatalf("terminate own session: %d %s", r.Status, r.Raw)
		}
		if v := l.verdict(t, b); v.Reason != "TOKEN_REVOKED" || v.Detail != "terminated" {
			t.Errorf("terminated session: %+v", v)
		}
		if v := l.verdict(t, a); v.Status != 200 {
			t.Errorf("caller after terminate: %+v", v)
		}
	})

	t.Run("expiry and uses follow the clock", func(t *testing.T) {
		plain, _, _ := l.signup(t, "clock-plain@example.com", pw, false)
		keep, _, _ := l.signup(t, "clock-keep@example.com", pw, true)
		idle, _, _ := l.signup(t, "clock-idle@example.com", pw, true)

		l.clock.Advance(24 * time.Hour)
		if v := l.verdict(t, plain); v.Reason != "TOKEN_EXPIRED" || v.Detail != "max" {
			t.Errorf("24h session after 24h: %+v", v)
		}
		// A touching validate 20 days in records a use; the idle deadline
		// slides to use + 30 days.
		l.clock.Advance(19 * domain.Day)
		r := l.do(t, "GET", "/v1/validate", keep, nil)
		want := l.clock.Now().Add(30 * domain.Day).Format(time.RFC3339)
		if r.Status != 200 || r.str("idle_expires_at") != want {
			t.Fatalf("touching validate: %d %s, want idle %s", r.Status, r.Raw, want)
		}
		checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if v := l.verdict(t, keep); v.Idle != want {
				return fmt.Errorf("after the touching validate the projection says %+v, want idle_expires_at %s", v, want)
			}
			return nil
		})

		l.clock.Advance(11 * domain.Day) // 31 days after signup
		if v := l.verdict(t, idle); v.Reason != "TOKEN_EXPIRED" || v.Detail != "idle" {
			t.Errorf("unused session after 31 days: %+v", v)
		}
		if v := l.verdict(t, keep); v.Status != 200 {
			t.Errorf("used session 11 days after its use: %+v", v)
		}
		// A touching validate of an expired token records nothing.
		before := l.lastSeq(t)
		if r := l.do(t, "GET", "/v1/validate", idle, nil); r.Status != 401 || r.str("expired") != "idle" {
			t.Errorf("expired validate: %d %s", r.Status, r.Raw)
		}
		if l.lastSeq(t) != before {
			t.Error("validating an expired token appended an event")
		}
	})

	// keep_logged_in is "12 months": the signup answers expires 31536000
	// (365 days in seconds), the session's max deadline is exactly 365 days
	// after its start, a session kept in use is still valid one second
	// before that deadline and expires for its age (max, not idle) at it.
	t.Run("keep_logged_in lasts 365 days to the second", func(t *testing.T) {
		start := l.clock.Now()
		r := l.do(t, "POST", "/v1/auth/signup", "", creds{"year@example.com", pw, true})
		if r.Status != 201 {
			t.Fatalf("signup: %d %s", r.Status, r.Raw)
		}
		tok := r.str("response", "token")
		expires, _ := r.get("response", "expires").(float64)
		if expires != 31536000 {
			t.Errorf("signup with keep_logged_in answered expires %v, want 31536000", r.get("response", "expires"))
		}
		v := l.verdict(t, tok)
		maxAt, err := time.Parse(time.RFC3339, v.Max)
		if err != nil || v.Status != 200 {
			t.Fatalf("validate after signup: %+v (%v)", v, err)
		}
		if want := start.AddDate(0, 0, 365); !maxAt.Equal(want) {
			t.Errorf("max_expires_at %s, want start + 365 days = %s", v.Max, want.Format(time.RFC3339))
		}
		if lifetime := maxAt.Sub(start); lifetime != time.Duration(expires)*time.Second {
			t.Errorf("max_expires_at is %s after the start but the signup said expires %v s", lifetime, expires)
		}
		// Use the session every 25 days so that idleness never ends it.
		settle := func() {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := l.uses.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := l.proj.WaitFor(ctx, l.lastSeq(t)); err != nil {
				t.Fatal(err)
			}
		}
		for day := 25; day <= 350; day += 25 {
			l.clock.Advance(25 * domain.Day)
			if r := l.do(t, "GET", "/v1/validate", tok, nil); r.Status != 200 {
				t.Fatalf("touching validate on day %d: %d %s", day, r.Status, r.Raw)
			}
			settle()
		}
		l.clock.Advance(maxAt.Add(-time.Second).Sub(l.clock.Now()))
		if v := l.verdict(t, tok); v.Status != 200 || v.Max != maxAt.Format(time.RFC3339) || v.Idle != v.Max {
			t.Errorf("one second before max_expires_at: %+v, want valid with idle capped at max %s", v, maxAt.Format(time.RFC3339))
		}
		l.clock.Advance(time.Second)
		if v := l.verdict(t, tok); v.Status != 401 || v.Reason != "TOKEN_EXPIRED" || v.Detail != "max" {
			t.Errorf("at max_expires_at: %+v, want 401 TOKEN_EXPIRED max", v)
		}
	})

	t.Run("health, readiness and metrics", func(t *testing.T) {
		if r := l.do(t, "GET", "/healthz", "", nil); r.Status != 200 {
			t.Errorf("healthz: %d", r.Status)
		}
		r := l.do(t, "GET", "/readyz", "", nil)
		if r.Status != 200 || r.get("applied_seq") != r.get("stream_last_seq") {
			t.Errorf("readyz: %d %s", r.Status, r.Raw)
		}
		metrics := l.do(t, "GET", "/metrics", "", nil)
		if metrics.Status != 200 {
			t.Errorf("metrics: %d", metrics.Status)
		}
		for _, m := range []string{"ledger_http_requests_total", "ledger_validate_verdicts_total", "ledger_appends_total", "ledger_projection_applied_seq", "ledger_uses_dropped_total"} {
			if !strings.Contains(metrics.Raw, m) {
				t.Errorf("metrics lack %s", m)
			}
		}
		// A login's parts: one password check, one append at the user's version.
		hashes, hashTime := metricValue(t, l, "ledger_password_hashes_total"), metricValue(t, l, "ledger_password_hash_seconds_total")
		appends := metricValue(t, l, "ledger_append_duration_seconds_count")
		l.signup(t, "metrics@example.com", pw, false)
		l.login(t, "metrics@example.com", pw, false)
		if got := metricValue(t, l, "ledger_password_hashes_total") - hashes; got != 2 {
			t.Errorf("a signup and a login ran %v password hashes, want 2", got)
		}
		if metricValue(t, l, "ledger_password_hash_seconds_total") <= hashTime {
			t.Error("password hash time did not grow")
		}
		// The signup publishes the email claim, the registration and its
		// session; the login publishes its session.
		if got := metricValue(t, l, "ledger_append_duration_seconds_count") - appends; got != 4 {
			t.Errorf("a signup and a login timed %v events appended at a version, want 4", got)
		}
	})
}
