package main

import (
	"bytes"
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// scenario builds sessions in every state and returns their tokens.
func scenario(t *testing.T, l *testLedger, pw string) []string {
	t.Helper()
	var tokens []string
	keep, _, _ := l.signup(t, "restart@example.com", pw, true)
	plain, _ := l.login(t, "restart@example.com", pw, false)
	out, _ := l.login(t, "restart@example.com", pw, true)
	other, _ := l.login(t, "restart@example.com", pw, true)
	term, termSID := l.login(t, "restart@example.com", pw, true)
	if r := l.do(t, "POST", "/v1/auth/logout", out, nil); r.Status != 200 {
		t.Fatalf("logout: %s", r.Raw)
	}
	if r := l.do(t, "DELETE", "/v1/sessions/"+termSID, keep, nil); r.Status != 200 {
		t.Fatalf("terminate: %s", r.Raw)
	}
	if r := l.do(t, "POST", "/v1/auth/logout-others", keep, nil); r.Status != 200 || r.get("response", "revoked") != float64(2) {
		t.Fatalf("logout-others: %s", r.Raw)
	}
	idle, _, _ := l.signup(t, "idle@example.com", pw, true)
	l.clock.Advance(2 * domain.Day)
	used, _, _ := l.signup(t, "used@example.com", pw, true)
	if r := l.do(t, "GET", "/v1/validate", used, nil); r.Status != 200 {
		t.Fatalf("validate: %s", r.Raw)
	}
	tokens = append(tokens, keep, plain, out, other, term, idle, used)
	// Let the use land before the snapshot of verdicts is taken.
	if err := l.uses.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if applied, last := l.proj.Applied(), l.lastSeq(t); applied != last {
			return fmt.Errorf("applied_seq %d, want the stream's last seq %d", applied, last)
		}
		return nil
	})
	return tokens
}

func verdicts(t *testing.T, l *testLedger, tokens []string, at []time.Duration) map[string]verdict {
	out := map[string]verdict{}
	for _, d := range at {
		for i, tok := range tokens {
			out[fmt.Sprintf("%d@%s", i, d)] = l.verdictAt(t, tok, d)
		}
	}
	return out
}

// verdictAt validates as if `d` later than the clock, then puts the clock back.
func (l *testLedger) verdictAt(t *testing.T, token string, d time.Duration) verdict {
	t.Helper()
	l.clock.Advance(d)
	defer l.clock.Advance(-d)
	return l.verdict(t, token)
}

// TestRestartAndRebuildKeepVerdicts: every verdict survives a restart on the
// same data dir, and a projection rebuilt from the stream alone gives the
// same verdicts as the one built live.
func TestRestartAndRebuildKeepVerdicts(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	const pw = "restart password"
	l := startLedger(t, dir, clock)
	tokens := scenario(t, l, pw)
	probes := []time.Duration{0, 23 * time.Hour, 29 * domain.Day, 31 * domain.Day, 400 * domain.Day}
	want := verdicts(t, l, tokens, probes)
	kinds := map[string]bool{}
	for _, v := range want {
		kinds[v.Reason+v.Detail] = true
	}
	for _, k := range []string{"", "TOKEN_REVOKEDlogout", "TOKEN_REVOKEDrevoke_others", "TOKEN_REVOKEDterminated", "TOKEN_EXPIREDidle", "TOKEN_EXPIREDmax"} {
		if !kinds[k] {
			t.Fatalf("scenario lacks verdict %q; have %v", k, kinds)
		}
	}
	applied := l.proj.Applied()
	liveDigest := l.admin(t, "/v1/audit/digest").str("state_digest")
	l.stop()

	l = startLedger(t, dir, clock)
	if got := l.proj.Applied(); got != applied {
		t.Errorf("after restart the checkpoint is %d, want %d", got, applied)
	}
	compareVerdicts(t, "after restart", want, verdicts(t, l, tokens, probes))
	l.stop()

	var progress bytes.Buffer
	if err := rebuild(context.Background(), l.cfg.LogConfig, &progress, discardLogger()); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if !strings.Contains(progress.String(), "rebuild: done") || !strings.Contains(progress.String(), fmt.Sprintf("%d events", applied)) {
		t.Errorf("rebuild output: %q", progress.String())
	}
	if liveDigest == "" || !strings.Contains(progress.String(), "state digest "+liveDigest) {
		t.Errorf("rebuilt state digest differs from the live one %q: %q", liveDigest, progress.String())
	}
	l = startLedger(t, dir, clock)
	compareVerdicts(t, "after rebuild", want, verdicts(t, l, tokens, probes))
}

func compareVerdicts(t *testing.T, when string, want, got map[string]verdict) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: verdict %s = %+v, want %+v", when, k, got[k], w)
		}
	}
}

// TestParallelSignupsOneEmail: of 50 concurrent signups with one email, in
// any letter case, exactly one succeeds.
func TestParallelSignupsOneEmail(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	const n = 50
	answers, errs := concurrently(n, func(i int) (response, error) {
		email := "race@example.com"
		if i%2 == 1 {
			email = "RACE@Example.com"
		}
		return request(context.Background(), l.URL(), "POST", "/v1/auth/signup", "", nil, creds{email, fmt.Sprintf("password %d", i), true})
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	count := map[int]int{}
	for _, r := range answers {
		count[r.Status]++
	}
	if count[201] != 1 || count[409] != n-1 {
		t.Fatalf("status counts %v, want one 201 and %d 409", count, n-1)
	}
	registered := 0
	for _, e := range l.events(t, "") {
		if e.Type == domain.EventUserRegistered {
			registered++
		}
	}
	if registered != 1 {
		t.Fatalf("%d user_registered events in the log, want 1", registered)
	}
}

// TestParallelLoginsAndLogoutsLoseNoEvent: concurrent writes to one user all
// land, each exactly once, and each logout is reflected in validation.
func TestParallelLoginsAndLogoutsLoseNoEvent(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	const pw = "parallel password"
	_, uid, _ := l.signup(t, "parallel@example.com", pw, true)
	const n = 16
	tokens := make([]string, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := request(context.Background(), l.URL(), "POST", "/v1/auth/login", "", nil, creds{"parallel@example.com", pw, i%2 == 0})
			if err != nil || r.Status != 200 {
				errs <- fmt.Errorf("login %d: %d %s %v", i, r.Status, r.Raw, err)
				return
			}
			tokens[i] = r.str("response", "token")
			if r, err := request(context.Background(), l.URL(), "POST", "/v1/auth/logout", tokens[i], nil, nil); err != nil || r.Status != 200 {
				errs <- fmt.Errorf("logout %d: %d %s %v", i, r.Status, r.Raw, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	count := map[domain.EventType]int{}
	ids := map[string]bool{}
	for _, e := range l.events(t, eventstore.UserSubject(uid)) {
		count[e.Type]++
		if ids[e.ID] {
			t.Errorf("event %s stored twice", e.ID)
		}
		ids[e.ID] = true
	}
	if count[domain.EventSessionStarted] != n+1 || count[domain.EventSessionLoggedOut] != n || count[domain.EventUserRegistered] != 1 {
		t.Fatalf("user history counts %v, want %d started, %d logged out", count, n+1, n)
	}
	for i, tok := range tokens {
		if v := l.verdict(t, tok); v.Reason != "TOKEN_REVOKED" || v.Detail != "logout" {
			t.Errorf("token %d after logout: %+v", i, v)
		}
	}
}

// TestEmailUniqueAcrossProcesses: two instances sharing one stream (the
// second connects to the first's NATS over TCP) still let only one signup
// per email through, and each sees the other's writes.
func TestEmailUniqueAcrossProcesses(t *testing.T) {
	clock := newClock()
	a := startLedger(t, t.TempDir(), clock, listening)
	b := startLedger(t, t.TempDir(), clock, joining(a))
	const n = 20
	answers, errs := concurrently(n, func(i int) (response, error) {
		l := a
		if i%2 == 1 {
			l = b
		}
		return request(context.Background(), l.URL(), "POST", "/v1/auth/signup", "", nil, creds{"shared@example.com", "shared password", true})
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	created, codes := 0, make([]int, len(answers))
	for i, r := range answers {
		codes[i] = r.Status
		if r.Status == http.StatusCreated {
			created++
		} else if r.Status != http.StatusConflict {
			t.Errorf("unexpected status %d", r.Status)
		}
	}
	if created != 1 {
		t.Fatalf("%d signups succeeded across two instances, want 1 (%v)", created, codes)
	}
	tok, _ := a.login(t, "shared@example.com", "shared password", true)
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got, want := b.proj.Applied(), a.lastSeq(t); got < want {
			return fmt.Errorf("B applied_seq %d, want at least %d (A's login)", got, want)
		}
		return nil
	})
	if v := b.verdict(t, tok); v.Status != 200 {
		t.Fatalf("B's verdict on A's token: %+v", v)
	}
	if r := b.do(t, "POST", "/v1/auth/logout", tok, nil); r.Status != 200 {
		t.Fatalf("logout on B: %s", r.Raw)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if v := a.verdict(t, tok); v.Reason != "TOKEN_REVOKED" {
			return fmt.Errorf("A's verdict after the logout on B: %+v, want TOKEN_REVOKED", v)
		}
		return nil
	})
}

// TestNoSecretsAtRest: after a workload, neither the data dir nor the logs
// contain a raw token, a token's secret part, a password, or a personal API
// key or its secret part (right, wrong or revoked), a TOTP secret (base32
// or raw), a recovery code or an MFA ticket.
func TestNoSecretsAtRest(t *testing.T) {
	dir := t.TempDir()
	const hookSecret = "webhook-secret-0123456789abcdef"
	hook, notices := webhookSink(t, hookSecret)
	// Codes and links also go by SMTP, with AUTH over STARTTLS: the
	// SMTP password is in no file and no log line either.
	const smtpUser, smtpPassword = "ledger-mailer", "smtp-secret-password-0123456789"
	cert, certKey := selfSignedCert(t)
	smtpAddr, mails := startSMTPSink(t, "-tls-cert", cert, "-tls-key", certKey, "-user", smtpUser, "-pass", smtpPassword)
	l := startLedger(t, dir, newClock(), viaWebhook(t, hook, hookSecret), func(c *ServiceConfig) {
		c.Notify.SMTPURL, c.Notify.SMTPFrom, c.Notify.SMTPCAFile = "smtp://"+smtpAddr, "ledger@example.com", cert
		c.Notify.SMTPUsername, c.Notify.SMTPPassword = smtpUser, smtpPassword
	})
	passwords := []string{"first secret password", "second secret password", "wrong guess password"}
	var tokens []string
	tok, _, _ := l.signup(t, "secrets@example.com", passwords[0], true)
	tokens = append(tokens, tok)
	tok2, _, _ := l.signup(t, "secrets2@example.com", passwords[1], false)
	tokens = append(tokens, tok2)
	l.do(t, "POST", "/v1/auth/login", "", creds{"secrets@example.com", passwords[2], true})
	l.do(t, "POST", "/v1/auth/login", "", creds{"nobody@example.com", passwords[2], true})
	t3, _ := l.login(t, "secrets@example.com", passwords[0], true)
	tokens = append(tokens, t3)
	l.clock.Advance(2 * time.Hour)
	for _, tk := range tokens {
		l.do(t, "GET", "/v1/validate", tk, nil)
	}
	l.do(t, "POST", "/v1/auth/logout", t3, nil)
	// Personal API keys: one used, one revoked, and a wrong one tried.
	var apiKeys []string
	for _, name := range []string{"used", "revoked"} {
		raw, id := l.createAPIKey(t, tokens[0], map[string]any{"name": name})
		apiKeys = append(apiKeys, raw)
		if name == "revoked" {
			l.do(t, "DELETE", "/v1/api-keys/"+id, tokens[0], nil)
		}
	}
	if r := l.exchange(t, "secrets@example.com", apiKeys[0]); r.Status != 200 {
		t.Fatalf("api key exchange: %d %s", r.Status, r.Raw)
	} else {
		tokens = append(tokens, r.str("response", "token"))
	}
	wrongAPIKey := apiKeys[0][:len(apiKeys[0])-4] + "AAAA"
	apiKeys = append(apiKeys, wrongAPIKey)
	l.exchange(t, "secrets@example.com", wrongAPIKey)
	l.exchange(t, "secrets@example.com", apiKeys[1])
	const wrongAdminKey = "a-wrong-admin-key-0123456789abcdef"
	doURL(t, l.URL(), "GET", "/v1/audit/digest", "", map[string]string{"X-API-Key": wrongAdminKey}, nil)
	l.admin(t, "/v1/audit/digest")
	// Service and app keys: used, one revoked, one guessed.
	_, serviceKey := l.createKey(t, "secrets", "audit", "admin")
	revokedID, revokedKey := l.createKey(t, "revoked", "validate")
	l.withKey(t, "GET", "/v1/audit/digest", serviceKey, nil)
	l.withKey(t, "DELETE", "/v1/admin/keys/"+revokedID, serviceKey, nil)
	l.withKey(t, "GET", "/v1/audit/digest", revokedKey, nil)
	wrongServiceKey := "sk_live_" + strings.Repeat("Q", 43)
	l.withKey(t, "GET", "/v1/audit/digest", wrongServiceKey, nil)
	app := l.withKey(t, "POST", "/v1/admin/apps", serviceKey, map[string]string{"name": "secret app"})
	appKey := app.str("response", "key")
	if appKey == "" {
		t.Fatalf("register app: %s", app.Raw)
	}
	doURL(t, l.URL(), "POST", "/v1/auth/login", "", map[string]string{"X-API-Key": appKey}, creds{"secrets@example.com", passwords[0], false})
	// Emailed codes and links (delivered to a webhook): a login code used,
	// a magic link used, a reset left pending, a reset used with a new
	// password.
	var codes, links []string
	notice := func(path string) map[string]string {
		l.clock.Advance(2 * time.Minute)
		l.do(t, "POST", path, "", map[string]string{"email": "secrets@example.com"})
		n := nextNotice(t, notices)
		codes, links = append(codes, n["code"]), append(links, n["token"])
		return n
	}
	n := notice("/v1/auth/code/request")
	if r := l.do(t, "POST", "/v1/auth/code/verify", "", map[string]any{"email": "secrets@example.com", "code": n["code"]}); r.Status != 200 {
		t.Fatalf("code login: %d %s", r.Status, r.Raw)
	} else {
		tokens = append(tokens, r.str("response", "token"))
	}
	n = notice("/v1/auth/code/request")
	if r := l.do(t, "POST", "/v1/auth/magic", "", map[string]any{"token": n["token"]}); r.Status != 200 {
		t.Fatalf("magic link: %d %s", r.Status, r.Raw)
	}
	notice("/v1/auth/password/reset-request")
	n = notice("/v1/auth/password/reset-request")
	passwords = append(passwords, "reset secret password")
	if r := l.do(t, "POST", "/v1/auth/password/reset", "", map[string]any{"email": "secrets@example.com", "code": n["code"], "new_password": passwords[len(passwords)-1]}); r.Status != 200 {
		t.Fatalf("reset: %d %s", r.Status, r.Raw)
	}
	// The second factor: the TOTP secret (base32 and raw), recovery codes
	// (used and not), MFA tickets (redeemed, wrong and open), codes.
	totpSecret, recovery := l.enrol(t, tokens[1])
	l.clock.Advance(30 * time.Second)
	var tickets []string
	for i := range 3 {
		tk := l.ticket(t, "/v1/auth/login", "secrets2@example.com", passwords[1], boolp(true))
		tickets = append(tickets, tk)
		switch i {
		case 0:
			if r := l.redeem(t, tk, "code", code(t, totpSecret, l.clock.Now())); r.Status != 200 {
				t.Fatalf("mfa login: %d %s", r.Status, r.Raw)
			} else {
				tokens = append(tokens, r.str("response", "token"))
			}
		case 1:
			l.redeem(t, tk, "recovery_code", recovery[0])
			l.redeem(t, tk, "recovery_code", "wrong-wrong-wrong-code")
		}
	}
	rawSecret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(totpSecret)
	if err != nil || len(rawSecret) != 20 {
		t.Fatalf("TOTP secret %q: %v", totpSecret, err)
	}
	// An erased user, and its email signed up again: emails are in no
	// file and no log line, before or after an erasure.
	_, erasedID, _ := l.signup(t, "erased@example.com", passwords[0], true)
	if r := l.withKey(t, "POST", "/v1/admin/users/"+erasedID+"/erase", serviceKey, nil); r.Status != 200 {
		t.Fatalf("erase: %d %s", r.Status, r.Raw)
	}
	l.signup(t, "erased@example.com", passwords[1], true)
	if m := nextMail(t, mails); m.AuthUser != smtpUser {
		t.Fatalf("SMTP delivery without AUTH: %+v", m)
	}
	logs := l.logs.String()
	l.stop()

	needles := map[string]string{}
	for _, p := range passwords {
		needles["password "+p] = p
	}
	needles["admin key"], needles["wrong admin key"] = testAdminKey, wrongAdminKey
	needles["smtp password"] = smtpPassword
	for _, email := range []string{"secrets@example.com", "secrets2@example.com", "nobody@example.com", "erased@example.com"} {
		needles["email "+email] = email
	}
	for i, k := range apiKeys {
		needles[fmt.Sprintf("api key %d", i)] = k
		needles[fmt.Sprintf("api key %d secret", i)] = k[len("pak_")+32:]
	}
	for what, k := range map[string]string{"service key": serviceKey, "revoked service key": revokedKey, "wrong service key": wrongServiceKey, "app key": appKey} {
		needles[what] = k
		needles[what+" secret"] = k[len("sk_live_"):] // both prefixes are 8 characters
	}
	needles["totp secret (base32)"], needles["totp secret (raw)"] = totpSecret, string(rawSecret)
	for i, c := range recovery {
		needles[fmt.Sprintf("recovery code %d", i)] = c
		needles[fmt.Sprintf("recovery code %d normalized", i)] = strings.ReplaceAll(c, "-", "")
	}
	for i, tk := range tickets {
		needles[fmt.Sprintf("mfa ticket %d", i)] = tk
		needles[fmt.Sprintf("mfa ticket %d secret", i)] = tk[strings.LastIndexByte(tk, '.')+1:]
	}
	for i, tk := range tokens {
		needles[fmt.Sprintf("token %d", i)] = tk
		needles[fmt.Sprintf("token %d secret", i)] = tk[len("slt_")+32:]
	}
	for i, lk := range links {
		needles[fmt.Sprintf("link token %d", i)] = lk
		needles[fmt.Sprintf("link token %d secret", i)] = lk[len("slm_")+32:]
	}
	// Six digits occur by chance in hex ids and hashes: a code counts as
	// found only standing alone (as "123456" or code=123456 would).
	var codeREs []*regexp.Regexp
	for _, c := range codes {
		if !domain.IsChallengeCode(c) {
			t.Fatalf("delivered code %q", c)
		}
		codeREs = append(codeREs, regexp.MustCompile(`(^|[^0-9A-Za-z])`+c+`([^0-9A-Za-z]|$)`))
	}
	findCode := func(data []byte) int {
		for i, re := range codeREs {
			if re.Match(data) {
				return i
			}
		}
		return -1
	}
	files := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if i := findCode(data); i >= 0 {
			t.Errorf("code %d found in %s", i, path)
		}
		for what, needle := range needles {
			if bytes.Contains(data, []byte(needle)) {
				t.Errorf("%s found in %s", what, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("scanned only %d files; the data dir is not where the ledger wrote", files)
	}
	// The scan must be able to see what the ledger stores: the hash of the
	// user's email is in the stream in clear (email_claimed, the claim's
	// subject), so finding it proves the files are readable.
	found := false
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if data, err := os.ReadFile(path); err == nil && bytes.Contains(data, []byte(domain.EmailHash("secrets@example.com"))) {
				found = true
			}
		}
		return nil
	})
	if !found {
		t.Fatal("the scan cannot see stored events in clear; it would miss a leaked secret too")
	}
	if i := findCode([]byte(logs)); i >= 0 {
		t.Errorf("code %d found in the log output", i)
	}
	for what, needle := range needles {
		if strings.Contains(logs, needle) {
			t.Errorf("%s found in the log output", what)
		}
	}
	if !strings.Contains(logs, "ledger serving") {
		t.Fatal("captured no log output")
	}
}
