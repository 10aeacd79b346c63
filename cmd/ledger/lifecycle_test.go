package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// sinkMessage is one message the SMTP sink received.
type sinkMessage struct {
	From       string   `json:"from"`
	To         []string `json:"to"`
	Data       string   `json:"data"`
	TLS        bool     `json:"tls"`
	TLSVersion string   `json:"tls_version"`
	AuthUser   string   `json:"auth_user"`
}

var (
	smtpSinkOnce sync.Once
	smtpSinkBin  string
	smtpSinkErr  error
)

// startSMTPSink builds cmd/ledger/internal/smtpsink (a go-smtp server)
// once and runs it as a separate process on a loopback port, with args
// (-tls-cert, -tls-key, -implicit-tls, -user, -pass); every message it
// receives arrives on the channel.
func startSMTPSink(t *testing.T, args ...string) (addr string, msgs <-chan sinkMessage) {
	t.Helper()
	smtpSinkOnce.Do(func() {
		dir, err := os.MkdirTemp("", "smtpsink")
		if err != nil {
			smtpSinkErr = err
			return
		}
		smtpSinkBin = filepath.Join(dir, "smtpsink")
		out, err := exec.Command("go", "build", "-o", smtpSinkBin, "./internal/smtpsink").CombinedOutput()
		if err != nil {
			smtpSinkErr = err
			t.Logf("%s", out)
		}
	})
	if smtpSinkErr != nil {
		t.Fatalf("build the SMTP sink: %v", smtpSinkErr)
	}
	cmd := exec.Command(smtpSinkBin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	rd := bufio.NewReader(stdout)
	first, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "listening ") {
		t.Fatalf("SMTP sink: %q %v", first, err)
	}
	ch := make(chan sinkMessage, 100)
	go func() {
		dec := json.NewDecoder(rd)
		for {
			var m sinkMessage
			if dec.Decode(&m) != nil {
				return
			}
			ch <- m
		}
	}()
	return strings.TrimSpace(strings.TrimPrefix(first, "listening ")), ch
}

// mailed is a delivered code and link token.
type mailed struct {
	To, Subject, Code, Token string
	Body                     string
	TLS                      bool   // the message came over TLS
	TLSVersion               string // and this version
	AuthUser                 string // after AUTH as this user
}

var (
	codeRE  = regexp.MustCompile(`code[^0-9]*([0-9]{6})\b`)
	tokenRE = regexp.MustCompile(`token=([A-Za-z0-9_%\-]+)`)
)

// nextMail waits for the sink's next message and reads its code and link.
func nextMail(t *testing.T, msgs <-chan sinkMessage) mailed {
	t.Helper()
	select {
	case m := <-msgs:
		msg, err := mail.ReadMessage(strings.NewReader(m.Data))
		if err != nil {
			t.Fatalf("delivered message: %v\n%s", err, m.Data)
		}
		var body io.Reader = msg.Body
		if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(msg.Body)
		}
		text, _ := io.ReadAll(body)
		out := mailed{To: strings.Join(m.To, ","), Subject: msg.Header.Get("Subject"), Body: string(text), TLS: m.TLS, TLSVersion: m.TLSVersion, AuthUser: m.AuthUser}
		if c := codeRE.FindStringSubmatch(string(text)); c != nil {
			out.Code = c[1]
		}
		if tk := tokenRE.FindStringSubmatch(string(text)); tk != nil {
			out.Token, _ = url.QueryUnescape(tk[1])
		}
		if out.Code == "" {
			t.Fatalf("no code in the message:\n%s", text)
		}
		return out
	case <-time.After(15 * time.Second):
		t.Fatal("no message delivered within 15s")
	}
	return mailed{}
}

// noMail checks that nothing more is delivered for a moment.
func noMail(t *testing.T, msgs <-chan sinkMessage, why string) {
	t.Helper()
	select {
	case m := <-msgs:
		t.Fatalf("%s: a message was delivered to %v", why, m.To)
	case <-time.After(500 * time.Millisecond):
	}
}

func viaSMTP(addr string) option {
	return func(c *ServiceConfig) {
		c.Notify = NotifyConfig{SMTPURL: "smtp://" + addr + "?starttls=off", SMTPFrom: "ledger@example.com", LinkURL: "https://app.example.com/auth/email"}
	}
}

// TestPasswordChange: a wrong current password is login's 400 and counts
// towards the throttle; the right one changes it, revokes the user's other
// sessions (revoked:password_changed, in validate, the as-of audit and the
// feed) and keeps the caller's; the old password is refused from then on.
func TestPasswordChange(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	const email, old, next = "change@example.com", "old password 1", "new password 2"
	tokA, userID, _ := l.signup(t, email, old, true)
	tokB, sidB := l.login(t, email, old, false)
	l.clock.Advance(time.Minute)
	if r := l.do(t, "POST", "/v1/auth/password", tokA, map[string]any{"current_password": "wrong guess", "new_password": next}); r.Status != 400 || r.str("reason") != "INVALID_LOGIN_CREDENTIALS" {
		t.Fatalf("wrong current password: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/password", tokA, map[string]any{"current_password": old, "new_password": "short"}); r.Status != 400 || r.str("reason") != "WEAK_PASSWORD" {
		t.Fatalf("weak new password: %d %s", r.Status, r.Raw)
	}
	r := l.do(t, "POST", "/v1/auth/password", tokA, map[string]any{"current_password": old, "new_password": next})
	if r.Status != 200 || r.get("response", "revoked") != float64(1) {
		t.Fatalf("change: %d %s", r.Status, r.Raw)
	}
	if v := l.verdict(t, tokB); v.Reason != "TOKEN_REVOKED" || v.Detail != "password_changed" {
		t.Fatalf("other session after the change: %+v", v)
	}
	if v := l.verdict(t, tokA); v.Status != 200 {
		t.Fatalf("caller's session after the change: %+v", v)
	}
	if r := l.do(t, "POST", "/v1/auth/login", "", creds{email, old, false}); r.Status != 400 {
		t.Fatalf("old password after the change: %d %s", r.Status, r.Raw)
	}
	tokC, _ := l.login(t, email, next, false)
	audit := l.admin(t, "/v1/audit/sessions/"+sidB)
	if !strings.HasPrefix(audit.str("summary"), "revoked: password_changed — password_changed at ") || audit.str("reason") != "revoked:password_changed" {
		t.Fatalf("as-of audit: %s", audit.Raw)
	}
	types := map[string]int{}
	for _, e := range l.auditEvents(t, userID) {
		types[e["type"].(string)]++
	}
	if types["password_changed"] != 1 || types["login_failed"] != 2 { // the wrong current password, the old one at login
		t.Fatalf("events %v", types)
	}
	// revoke_other_sessions false keeps the others.
	r = l.do(t, "POST", "/v1/auth/password", tokA, map[string]any{"current_password": next, "new_password": old, "revoke_other_sessions": false})
	if r.Status != 200 || r.get("response", "revoked") != float64(0) {
		t.Fatalf("change keeping the others: %d %s", r.Status, r.Raw)
	}
	if v := l.verdict(t, tokC); v.Status != 200 {
		t.Fatalf("other session kept: %+v", v)
	}
	// The revocation feed has it.
	feed := doURL(t, l.URL(), "GET", "/v1/audit/users/"+userID+"/events", "", map[string]string{"X-API-Key": testAdminKey}, nil)
	if !strings.Contains(feed.Raw, `"revoke_other_sessions":false`) {
		t.Fatalf("second change not in the history: %s", feed.Raw)
	}
	revs, err := l.proj.Revocations(0, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rv := range revs {
		found = found || (rv.SessionID == sidB && rv.Reason == string(domain.ReasonRevokedPasswordChanged))
	}
	if !found {
		t.Fatalf("the revocation feed lacks %s: %+v", sidB, revs)
	}
}

// TestPasswordResetByEmail: over a real SMTP server process. A request for
// an unknown email answers as a known one's and sends nothing; the code
// resets the password once and revokes every session; wrong codes are
// INVALID_CODE and count; after 5 the reset is dead; requests are limited
// to one a minute per account; the link works; codes expire.
func TestPasswordResetByEmail(t *testing.T) {
	addr, msgs := startSMTPSink(t)
	l := startLedger(t, t.TempDir(), newClock(), viaSMTP(addr))
	const email, old, next = "reset@example.com", "old password 1", "new password 2"
	tok1, userID, _ := l.signup(t, email, old, true)
	tok2, _ := l.login(t, email, old, false)

	start := time.Now()
	unknown := l.do(t, "POST", "/v1/auth/password/reset-request", "", map[string]string{"email": "nobody@example.com"})
	unknownTook := time.Since(start)
	start = time.Now()
	known := l.do(t, "POST", "/v1/auth/password/reset-request", "", map[string]string{"email": "Reset@Example.com"})
	knownTook := time.Since(start)
	if unknown.Status != 202 || known.Status != 202 || unknown.Raw != known.Raw || known.Header.Get("X-Ledger-Seq") != "" {
		t.Fatalf("reset requests: unknown %d %s, known %d %s %v", unknown.Status, unknown.Raw, known.Status, known.Raw, known.Header)
	}
	if unknownTook < 100*time.Millisecond || knownTook < 100*time.Millisecond {
		t.Fatalf("answered before the floor: unknown %s, known %s", unknownTook, knownTook)
	}
	t.Logf("reset request took %s (unknown email) and %s (known)", unknownTook, knownTook)
	m := nextMail(t, msgs)
	if m.To != email || !strings.Contains(m.Subject, "reset") || !strings.HasPrefix(m.Token, domain.ResetLinkPrefix) {
		t.Fatalf("message %+v", m)
	}
	noMail(t, msgs, "the unknown email")

	wrong := "000000"
	if m.Code == wrong {
		wrong = "000001"
	}
	reset := func(body map[string]any) response {
		return l.do(t, "POST", "/v1/auth/password/reset", "", body)
	}
	if r := reset(map[string]any{"email": email, "code": wrong, "new_password": next}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("wrong code: %d %s", r.Status, r.Raw)
	}
	if r := reset(map[string]any{"email": "nobody@example.com", "code": m.Code, "new_password": next}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("code of another email: %d %s", r.Status, r.Raw)
	}
	r := reset(map[string]any{"email": email, "code": m.Code, "new_password": next})
	if r.Status != 200 || r.get("response", "revoked") != float64(2) {
		t.Fatalf("reset: %d %s", r.Status, r.Raw)
	}
	for _, tk := range []string{tok1, tok2} {
		if v := l.verdict(t, tk); v.Reason != "TOKEN_REVOKED" || v.Detail != "password_reset" {
			t.Fatalf("session after the reset: %+v", v)
		}
	}
	if r := reset(map[string]any{"email": email, "code": m.Code, "new_password": old}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("code used twice: %d %s", r.Status, r.Raw)
	}
	if r := reset(map[string]any{"token": m.Token, "new_password": old}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("link of a used reset: %d %s", r.Status, r.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/login", "", creds{email, old, false}); r.Status != 400 {
		t.Fatalf("old password after the reset: %d", r.Status)
	}
	l.login(t, email, next, false)

	// One request a minute per account: the second sends nothing.
	l.clock.Advance(2 * time.Minute)
	l.do(t, "POST", "/v1/auth/password/reset-request", "", map[string]string{"email": email})
	m = nextMail(t, msgs)
	l.clock.Advance(30 * time.Second)
	if r := l.do(t, "POST", "/v1/auth/password/reset-request", "", map[string]string{"email": email}); r.Status != 202 {
		t.Fatalf("second request: %d", r.Status)
	}
	noMail(t, msgs, "a second request within a minute")
	// The link (no email in it) resets too.
	if r := reset(map[string]any{"token": m.Token, "new_password": old}); r.Status != 200 {
		t.Fatalf("reset by link: %d %s", r.Status, r.Raw)
	}
	l.login(t, email, old, false)

	// Five wrong codes kill the reset (the fifth also throttles the
	// account, like five wrong passwords).
	l.clock.Advance(2 * time.Minute)
	l.do(t, "POST", "/v1/auth/password/reset-request", "", map[string]string{"email": email})
	m = nextMail(t, msgs)
	for i := range 5 {
		if r := reset(map[string]any{"email": email, "code": wrong, "new_password": next}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
			t.Fatalf("wrong code %d: %d %s", i+1, r.Status, r.Raw)
		}
	}
	if r := reset(map[string]any{"email": email, "code": m.Code, "new_password": next}); r.Status != 429 || r.str("reason") != "TOO_MANY_ATTEMPTS" {
		t.Fatalf("right code while throttled: %d %s", r.Status, r.Raw)
	}
	l.clock.Advance(time.Minute) // past the throttle, not the code's expiry
	if r := reset(map[string]any{"email": email, "code": m.Code, "new_password": next}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("right code after 5 wrong ones: %d %s", r.Status, r.Raw)
	}

	// Expiry: 10 minutes.
	l.clock.Advance(2 * time.Minute)
	l.do(t, "POST", "/v1/auth/password/reset-request", "", map[string]string{"email": email})
	m = nextMail(t, msgs)
	l.clock.Advance(10 * time.Minute)
	if r := reset(map[string]any{"email": email, "code": m.Code, "new_password": next}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("expired code: %d %s", r.Status, r.Raw)
	}
	types := map[string]int{}
	for _, e := range l.auditEvents(t, userID) {
		types[e["type"].(string)]++
		if e["type"] == "password_reset_requested" {
			raw, _ := json.Marshal(e)
			if strings.Contains(string(raw), m.Code) {
				t.Fatalf("a code in the log: %s", raw)
			}
		}
	}
	if types["password_reset_requested"] != 4 || types["password_reset"] != 2 || types["login_failed"] < 7 {
		t.Fatalf("events %v", types)
	}
}

// webhookSink is a real HTTP server that checks each notice's signature.
func webhookSink(t *testing.T, secret string) (url string, notices <-chan map[string]string) {
	t.Helper()
	ch := make(chan map[string]string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		if r.Header.Get("X-Ledger-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("webhook signature %q does not match the body", r.Header.Get("X-Ledger-Signature"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var n map[string]string
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		ch <- n
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

func viaWebhook(t *testing.T, hookURL, secret string) option {
	path := filepath.Join(t.TempDir(), "hook.key")
	if err := os.WriteFile(path, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *ServiceConfig) {
		c.Notify = NotifyConfig{Webhook: hookURL, WebhookSecretFile: path, LinkURL: "https://app.example.com/auth/email"}
	}
}

func nextNotice(t *testing.T, ch <-chan map[string]string) map[string]string {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(15 * time.Second):
		t.Fatal("no webhook call within 15s")
	}
	return nil
}

// TestLoginCodeAndMagicLink: through a signed webhook (verified by a real
// HTTP server): the code logs in once (method email_code), the magic link
// once (method magic_link), both listed with their method; codes expire
// after 5 minutes.
func TestLoginCodeAndMagicLink(t *testing.T) {
	const secret = "webhook-secret-0123456789abcdef"
	hook, notices := webhookSink(t, secret)
	l := startLedger(t, t.TempDir(), newClock(), viaWebhook(t, hook, secret))
	const email = "code@example.com"
	tok, _, _ := l.signup(t, email, "a password 123", false)
	if r := l.do(t, "POST", "/v1/auth/code/request", "", map[string]string{"email": email}); r.Status != 202 {
		t.Fatalf("code request: %d %s", r.Status, r.Raw)
	}
	n := nextNotice(t, notices)
	if n["email"] != email || n["purpose"] != "login" || !domain.IsChallengeCode(n["code"]) || !strings.HasPrefix(n["token"], domain.LoginLinkPrefix) ||
		n["link"] != "https://app.example.com/auth/email?token="+n["token"] || strings.Contains(n["link"], "code%40") || strings.Contains(n["link"], email) {
		t.Fatalf("notice %v", n)
	}
	r := l.do(t, "POST", "/v1/auth/code/verify", "", map[string]any{"email": email, "code": n["code"]})
	if r.Status != 200 {
		t.Fatalf("code login: %d %s", r.Status, r.Raw)
	}
	codeTok := r.str("response", "token")
	if v := l.do(t, "GET", "/v1/validate?touch=false", codeTok, nil); v.str("method") != "email_code" {
		t.Fatalf("validate code session: %s", v.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/code/verify", "", map[string]any{"email": email, "code": n["code"]}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("code used twice: %d %s", r.Status, r.Raw)
	}
	// The magic link of a new request.
	l.clock.Advance(2 * time.Minute)
	l.do(t, "POST", "/v1/auth/code/request", "", map[string]string{"email": email})
	n = nextNotice(t, notices)
	r = l.do(t, "POST", "/v1/auth/magic", "", map[string]any{"token": n["token"], "keep_logged_in": true})
	if r.Status != 200 || r.get("response", "expires") != float64(365*86400) {
		t.Fatalf("magic link: %d %s", r.Status, r.Raw)
	}
	magicSID := r.str("response", "session_id")
	if r := l.do(t, "POST", "/v1/auth/magic", "", map[string]any{"token": n["token"]}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("magic link used twice: %d %s", r.Status, r.Raw)
	}
	_, items, _ := listAll(t, l, tok, "")
	methods := map[string]any{}
	for _, m := range items {
		methods[m["session_id"].(string)] = m["method"]
	}
	if methods[magicSID] != "magic_link" || len(methods) != 3 {
		t.Fatalf("session list methods %v", methods)
	}
	if a := l.admin(t, "/v1/audit/sessions/"+magicSID); !strings.Contains(a.Raw, `"method":"magic_link"`) {
		t.Fatalf("audit of the magic link session: %s", a.Raw)
	}
	// Expiry: 5 minutes.
	l.clock.Advance(2 * time.Minute)
	l.do(t, "POST", "/v1/auth/code/request", "", map[string]string{"email": email})
	n = nextNotice(t, notices)
	l.clock.Advance(5 * time.Minute)
	if r := l.do(t, "POST", "/v1/auth/code/verify", "", map[string]any{"email": email, "code": n["code"]}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("expired code: %d %s", r.Status, r.Raw)
	}
	// Unknown emails: 202, nothing sent; their codes fail alike.
	if r := l.do(t, "POST", "/v1/auth/code/request", "", map[string]string{"email": "nobody@example.com"}); r.Status != 202 {
		t.Fatalf("unknown email: %d", r.Status)
	}
	if r := l.do(t, "POST", "/v1/auth/code/verify", "", map[string]any{"email": "nobody@example.com", "code": "123456"}); r.Status != 400 || r.str("reason") != "INVALID_CODE" {
		t.Fatalf("unknown email's code: %d %s", r.Status, r.Raw)
	}
	select {
	case n := <-notices:
		t.Fatalf("a notice for an unknown email: %v", n)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestDeliveryOptions: --dev-print-codes is refused off loopback, a
// webhook needs its key file, SMTP its From; without any delivery the
// email routes answer 503 EMAIL_NOT_CONFIGURED.
func TestDeliveryOptions(t *testing.T) {
	base := testConfig(t.TempDir(), newClock(), io.Discard)
	for _, c := range []struct {
		http string
		n    NotifyConfig
		want string
	}{
		{"0.0.0.0:8080", NotifyConfig{DevPrintCodes: true}, "--dev-print-codes"},
		{"192.0.2.1:8080", NotifyConfig{DevPrintCodes: true}, "loopback"},
		{"127.0.0.1:8080", NotifyConfig{Webhook: "https://example.com/hook"}, "--notify-webhook-secret-file"},
		{"127.0.0.1:8080", NotifyConfig{SMTPURL: "smtp://mail.example.com"}, "--smtp-from"},
		{"127.0.0.1:8080", NotifyConfig{SMTPURL: "http://mail.example.com", SMTPFrom: "a@example.com"}, "--smtp-url"},
	} {
		cfg := base
		cfg.HTTPAddr, cfg.Notify = c.http, c.n
		cfg.EnsureDefaults()
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %+v: %v, want an error about %s", c.http, c.n, err, c.want)
		}
	}
	ok := base
	ok.HTTPAddr, ok.Notify = "[::1]:8080", NotifyConfig{DevPrintCodes: true}
	ok.EnsureDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("dev mode on loopback: %v", err)
	}
	l := startLedger(t, t.TempDir(), newClock())
	if r := l.do(t, "POST", "/v1/auth/password/reset-request", "", map[string]string{"email": "a@example.com"}); r.Status != 503 || r.str("reason") != "EMAIL_NOT_CONFIGURED" {
		t.Fatalf("no delivery: %d %s", r.Status, r.Raw)
	}
}
