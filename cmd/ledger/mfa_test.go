package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/sessionledger/ledger/domain"
)

// code is the real TOTP code of a base32 secret at an instant, as an
// authenticator app computes it (pquerna/otp, RFC 6238).
func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enrol enrols the token's user in TOTP and returns the secret and the
// recovery codes; the confirming code is the current step's.
func (l *testLedger) enrol(t *testing.T, token string) (secret string, recovery []string) {
	t.Helper()
	r := l.do(t, "POST", "/v1/mfa/totp", token, nil)
	secret = r.str("response", "secret")
	if r.Status != http.StatusCreated || secret == "" || !strings.HasPrefix(r.str("response", "otpauth_uri"), "otpauth://totp/") ||
		!strings.Contains(r.str("response", "otpauth_uri"), "secret="+secret) {
		t.Fatalf("start enrolment: %d %s", r.Status, r.Raw)
	}
	r = l.do(t, "POST", "/v1/mfa/totp/confirm", token, map[string]string{"code": code(t, secret, l.clock.Now())})
	codes, _ := r.get("response", "recovery_codes").([]any)
	if r.Status != http.StatusOK || len(codes) != domain.RecoveryCodeCount {
		t.Fatalf("confirm enrolment: %d %s", r.Status, r.Raw)
	}
	for _, c := range codes {
		recovery = append(recovery, c.(string))
	}
	return secret, recovery
}

// ticket logs in without a code and returns the MFA_REQUIRED ticket.
func (l *testLedger) ticket(t *testing.T, path, email, password string, keep *bool) string {
	t.Helper()
	body := map[string]any{"email": email, "password": password}
	if keep != nil {
		body["keep_logged_in"] = *keep
	}
	r := l.do(t, "POST", path, "", body)
	tk := r.str("mfa_ticket")
	if r.Status != http.StatusUnauthorized || r.str("reason") != "MFA_REQUIRED" || !strings.HasPrefix(tk, "mft_") ||
		r.get("args", "mfa_ticket") != tk || r.get("args", "expires_in") != float64(300) {
		t.Fatalf("login of an enrolled user without a code on %s: %d %s", path, r.Status, r.Raw)
	}
	return tk
}

func (l *testLedger) redeem(t *testing.T, ticket string, field, value string) response {
	t.Helper()
	return l.do(t, "POST", "/v1/auth/login/mfa", "", map[string]string{"mfa_ticket": ticket, field: value})
}

func boolp(b bool) *bool { return &b }

// TestTOTPEndToEnd walks the second factor over HTTP with real TOTP codes
// computed from the secret at the fake clock's time: enrolment, MFA_REQUIRED
// on both login paths, ±1 step, replay refusal, single-use tickets and
// recovery codes, the 2FA lifetimes (2592000 / 86400), validate's aal and
// step-up, the as-of audit of an MFA session, and disabling.
func TestTOTPEndToEnd(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	const email, pw = "totp@example.com", "totp password"
	aal1, userID, aal1SID := l.signup(t, email, pw, true)
	if r := l.do(t, "POST", "/v1/mfa/totp/confirm", aal1, map[string]string{"code": "123456"}); r.Status != 409 || r.str("reason") != "MFA_NOT_PENDING" {
		t.Fatalf("confirm without enrolment: %d %s", r.Status, r.Raw)
	}
	first := l.do(t, "POST", "/v1/mfa/totp", aal1, nil).str("response", "secret")
	secret, recovery := "", []string(nil)
	{ // a wrong code does not confirm; a restarted enrolment replaces the secret
		if r := l.do(t, "POST", "/v1/mfa/totp/confirm", aal1, map[string]string{"code": code(t, first, l.clock.Now().Add(-5*time.Minute))}); r.Status != 400 || r.str("reason") != "MFA_CODE_INVALID" {
			t.Fatalf("confirm with a stale code: %d %s", r.Status, r.Raw)
		}
		secret, recovery = l.enrol(t, aal1)
		if secret == first {
			t.Fatal("a restarted enrolment kept the secret")
		}
	}
	confirmed := l.clock.Now() // its step is used
	if r := l.do(t, "POST", "/v1/mfa/totp", aal1, nil); r.Status != 409 || r.str("reason") != "MFA_ALREADY_ENABLED" {
		t.Fatalf("enrol twice: %d %s", r.Status, r.Raw)
	}
	if v := l.do(t, "GET", "/v1/validate?touch=false", aal1, nil); v.get("mfa") != false || v.str("aal") != "aal1" {
		t.Fatalf("the password session after enrolling: %s", v.Raw)
	}

	// Both login paths answer MFA_REQUIRED; Bubble's keeps the user logged in.
	bubble := l.ticket(t, "/api/1.1/wf/generate-api-token", "TOTP@example.com", pw, nil)
	tk := l.ticket(t, "/v1/auth/login", email, pw, boolp(true))
	if r := l.do(t, "POST", "/v1/auth/login", "", creds{email, "wrong password", true}); r.str("reason") != "INVALID_LOGIN_CREDENTIALS" {
		t.Fatalf("a wrong password of an enrolled user: %s", r.Raw)
	}

	// The code that confirmed the enrolment is used: its step is refused.
	if r := l.redeem(t, tk, "code", code(t, secret, confirmed)); r.Status != 400 || r.str("reason") != "MFA_CODE_INVALID" {
		t.Fatalf("replay of the confirming code: %d %s", r.Status, r.Raw)
	}
	// Two steps ahead is out of the window; one step ahead is in.
	if r := l.redeem(t, tk, "code", code(t, secret, l.clock.Now().Add(60*time.Second))); r.Status != 400 {
		t.Fatalf("a code two steps ahead: %d %s", r.Status, r.Raw)
	}
	ahead := code(t, secret, l.clock.Now().Add(30*time.Second))
	r := l.redeem(t, tk, "code", ahead)
	if r.Status != 200 || r.get("response", "expires") != float64(2592000) || r.str("response", "user_id") != userID {
		t.Fatalf("a code one step ahead, keep logged in: %d %s", r.Status, r.Raw)
	}
	mfaTok, mfaSID := r.str("response", "token"), r.str("response", "session_id")
	v := l.do(t, "GET", "/v1/validate?touch=false&require=aal2", mfaTok, nil)
	if v.Status != 200 || v.get("mfa") != true || v.str("aal") != "aal2" || v.str("max_expires_at") != l.clock.Now().Add(30*domain.Day).Format(time.RFC3339) {
		t.Fatalf("validate the MFA session: %d %s", v.Status, v.Raw)
	}
	// The ticket is single use, and the step just used is not accepted again.
	if r := l.redeem(t, tk, "code", code(t, secret, l.clock.Now())); r.Status != 401 || r.str("reason") != "MFA_TICKET_INVALID" {
		t.Fatalf("a ticket redeemed twice: %d %s", r.Status, r.Raw)
	}
	if r := l.redeem(t, bubble, "code", ahead); r.Status != 400 || r.str("reason") != "MFA_CODE_INVALID" {
		t.Fatalf("replay of a used code on another ticket: %d %s", r.Status, r.Raw)
	}
	l.clock.Advance(90 * time.Second) // the step behind now is after the used one
	if r := l.redeem(t, bubble, "code", code(t, secret, l.clock.Now().Add(-30*time.Second))); r.Status != 200 || r.get("response", "expires") != float64(2592000) {
		t.Fatalf("Bubble's ticket with a code one step behind: %d %s", r.Status, r.Raw)
	}

	// totp_code in the login body: one call; without keep_logged_in, 24 h.
	l.clock.Advance(30 * time.Second)
	r = l.do(t, "POST", "/v1/auth/login", "", map[string]any{"email": email, "password": pw, "totp_code": code(t, secret, l.clock.Now())})
	if r.Status != 200 || r.get("response", "expires") != float64(86400) {
		t.Fatalf("login with totp_code: %d %s", r.Status, r.Raw)
	}
	if v := l.do(t, "GET", "/v1/validate?touch=false", r.str("response", "token"), nil); v.str("aal") != "aal2" {
		t.Fatalf("the session of a login with totp_code: %s", v.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/login", "", map[string]any{"email": email, "password": pw, "totp_code": code(t, secret, l.clock.Now())}); r.str("reason") != "MFA_CODE_INVALID" {
		t.Fatalf("login with the same totp_code again: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/signup", "", map[string]any{"email": "x@example.com", "password": pw, "totp_code": "123456"}); r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
		t.Fatalf("signup with totp_code: %d %s", r.Status, r.Raw)
	}

	// A recovery code, once; case and dashes do not matter.
	tk = l.ticket(t, "/v1/auth/login", email, pw, boolp(false))
	r = l.redeem(t, tk, "recovery_code", strings.ToUpper(strings.ReplaceAll(recovery[3], "-", "")))
	if r.Status != 200 || r.get("response", "expires") != float64(86400) {
		t.Fatalf("a recovery code: %d %s", r.Status, r.Raw)
	}
	recoverySID := r.str("response", "session_id")
	tk = l.ticket(t, "/v1/auth/login", email, pw, boolp(false))
	if r := l.redeem(t, tk, "recovery_code", recovery[3]); r.Status != 400 || r.str("reason") != "MFA_CODE_INVALID" {
		t.Fatalf("a recovery code used twice: %d %s", r.Status, r.Raw)
	}
	for name, body := range map[string]string{
		"both":          `{"mfa_ticket":"` + tk + `","code":"123456","recovery_code":"x"}`,
		"neither":       `{"mfa_ticket":"` + tk + `"}`,
		"no ticket":     `{"code":"123456"}`,
		"unknown field": `{"mfa_ticket":"` + tk + `","code":"123456","otp":"1"}`,
	} {
		if r := l.do(t, "POST", "/v1/auth/login/mfa", "", body); r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	if r := l.redeem(t, "mft_"+userID+".AAAA", "code", "123456"); r.Status != 401 || r.str("reason") != "MFA_TICKET_INVALID" {
		t.Fatalf("a made-up ticket: %d %s", r.Status, r.Raw)
	}
	// A ticket lasts five minutes.
	l.clock.Advance(5 * time.Minute)
	if r := l.redeem(t, tk, "code", code(t, secret, l.clock.Now())); r.Status != 401 || r.str("reason") != "MFA_TICKET_INVALID" {
		t.Fatalf("an expired ticket: %d %s", r.Status, r.Raw)
	}

	// Step-up: the password session is valid, but not aal2.
	if r := l.do(t, "GET", "/v1/validate?require=aal2", aal1, nil); r.Status != 403 || r.str("reason") != "STEP_UP_REQUIRED" {
		t.Fatalf("step-up of an aal1 session: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "GET", "/v1/validate?require=aal3", aal1, nil); r.Status != 400 {
		t.Fatalf("require=aal3: %d %s", r.Status, r.Raw)
	}
	g := doURL(t, l.URL(), "GET", "/v1/authz", aal1, map[string]string{"X-Ledger-Require": "aal2"}, nil)
	if g.Status != 403 || g.Header.Get("X-Ledger-Reason") != "forbidden:step_up" {
		t.Fatalf("gateway step-up of an aal1 session: %d %v", g.Status, g.Header)
	}
	if g := doURL(t, l.URL(), "GET", "/v1/authz", mfaTok, map[string]string{"X-Ledger-Require": "aal2"}, nil); g.Status != 200 {
		t.Fatalf("gateway step-up of an aal2 session: %d %v", g.Status, g.Header)
	}

	// The audit explains the MFA sessions by their second factor.
	for sid, want := range map[string]string{mfaSID: "TOTP code of time step", recoverySID: "a recovery code"} {
		a := l.admin(t, "/v1/audit/sessions/"+sid)
		ex, _ := a.get("explanation").([]any)
		if len(ex) == 0 || ex[0].(map[string]any)["role"] != "second_factor" || !strings.Contains(a.str("summary"), "second factor (aal2): "+want) {
			t.Fatalf("as-of audit of %s: %s", sid, a.Raw)
		}
	}
	if a := l.admin(t, "/v1/audit/sessions/"+aal1SID); strings.Contains(a.str("summary"), "second factor") {
		t.Fatalf("as-of audit of the password session: %s", a.Raw)
	}

	// Disabling needs a current code.
	if r := l.do(t, "DELETE", "/v1/mfa/totp", mfaTok, map[string]string{"code": "000000"}); r.Status != 400 || r.str("reason") != "MFA_CODE_INVALID" {
		t.Fatalf("disable with a wrong code: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "DELETE", "/v1/mfa/totp", aal1, map[string]string{"code": code(t, secret, l.clock.Now())}); r.Status != 200 {
		t.Fatalf("disable: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "DELETE", "/v1/mfa/totp", aal1, map[string]string{"code": code(t, secret, l.clock.Now())}); r.Status != 409 || r.str("reason") != "MFA_NOT_ENABLED" {
		t.Fatalf("disable twice: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "POST", "/api/1.1/wf/generate-api-token", "", map[string]string{"email": email, "password": pw}); r.Status != 200 || r.get("response", "expires") != float64(31536000) {
		t.Fatalf("login after disabling: %d %s", r.Status, r.Raw)
	}
	if v := l.verdict(t, mfaTok); v.Status != 200 {
		t.Fatalf("the MFA session after disabling: %+v", v)
	}

	var types []string
	for _, e := range l.auditEvents(t, userID) {
		if strings.HasPrefix(e["type"].(string), "mfa_") || e["type"] == "recovery_code_used" {
			types = append(types, e["type"].(string))
		}
	}
	want := "mfa_enrolment_started,mfa_enrolment_started,mfa_enrolled,mfa_challenged,mfa_challenged,mfa_failed,mfa_failed,mfa_verified," +
		"mfa_failed,mfa_verified,mfa_verified,mfa_failed,mfa_challenged,recovery_code_used,mfa_challenged,mfa_failed,mfa_failed,mfa_disabled"
	if got := strings.Join(types, ","); got != want {
		t.Fatalf("MFA events\n got %s\nwant %s", got, want)
	}
}

// TestTOTPThrottleAndInstances: wrong codes throttle the account as wrong
// passwords do (429 for the right code too, while it lasts), and a ticket
// and the replay rule hold across two instances sharing the ledger.
func TestTOTPThrottleAndInstances(t *testing.T) {
	clock := newClock()
	rule := domain.LoginThrottle{After: 3, Window: time.Hour, Base: 30 * time.Second, Max: 2 * time.Minute}
	// b joins a's ledger with a's master key: one key store for both.
	a := startLedger(t, t.TempDir(), clock, listening, withThrottle(rule))
	b := startLedger(t, t.TempDir(), clock, joining(a), withThrottle(rule))
	const email, pw = "throttle-totp@example.com", "throttle password"
	tok, userID, _ := a.signup(t, email, pw, true)
	secret, _ := a.enrol(t, tok)
	clock.Advance(30 * time.Second)

	tk := a.ticket(t, "/v1/auth/login", email, pw, boolp(true))
	syncTo(t, a, b)
	for i := 1; i <= 3; i++ {
		if r := b.redeem(t, tk, "code", fmt.Sprintf("%06d", i)); r.Status != 400 || r.str("reason") != "MFA_CODE_INVALID" {
			t.Fatalf("wrong code %d on B: %d %s", i, r.Status, r.Raw)
		}
	}
	right := code(t, secret, clock.Now())
	if r := a.redeem(t, tk, "code", right); r.Status != 429 || r.str("reason") != "TOO_MANY_ATTEMPTS" || r.Header.Get("Retry-After") != "30" {
		t.Fatalf("the right code on A while throttled by wrong codes on B: %d %s", r.Status, r.Raw)
	}
	if r := a.do(t, "POST", "/v1/auth/login", "", creds{email, pw, true}); r.Status != 429 {
		t.Fatalf("a password login while throttled by wrong codes: %d %s", r.Status, r.Raw)
	}
	clock.Advance(30 * time.Second)
	tk = a.ticket(t, "/v1/auth/login", email, pw, boolp(true))
	now := code(t, secret, clock.Now())
	syncTo(t, a, b)
	if r := b.redeem(t, tk, "code", now); r.Status != 200 || r.get("response", "expires") != float64(2592000) {
		t.Fatalf("A's ticket redeemed on B: %d %s", r.Status, r.Raw)
	}
	tk = b.ticket(t, "/v1/auth/login", email, pw, boolp(true))
	syncTo(t, b, a)
	if r := a.redeem(t, tk, "code", now); r.Status != 400 || r.str("reason") != "MFA_CODE_INVALID" {
		t.Fatalf("B's used code replayed on A: %d %s", r.Status, r.Raw)
	}
	var reasons []string
	for _, e := range a.auditEvents(t, userID) {
		if e["type"] == "mfa_failed" {
			reasons = append(reasons, e["payload"].(map[string]any)["reason"].(string))
		}
	}
	if strings.Join(reasons, ",") != "wrong_totp,wrong_totp,wrong_totp,wrong_totp" {
		t.Fatalf("mfa_failed reasons %v", reasons)
	}
}

// syncTo waits until `to` has applied everything `from` wrote.
func syncTo(t *testing.T, from, to *testLedger) {
	t.Helper()
	last := from.lastSeq(t)
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got := to.proj.Applied(); got < last {
			return fmt.Errorf("applied %d, want %d", got, last)
		}
		return nil
	})
}
