package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/eventstore/natsauth"
)

func TestAuditNeedsTheAdminKey(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	_, _, sid := l.signup(t, "key@example.com", "key password", true)
	path := "/v1/audit/sessions/" + sid
	for name, c := range map[string]struct {
		key    string
		status int
		reason string
	}{
		"no key":    {"", 401, "API_KEY_REQUIRED"},
		"wrong key": {"not-the-key", 401, "API_KEY_INVALID"},
		"right key": {testAdminKey, 200, ""},
	} {
		var header map[string]string
		if c.key != "" {
			header = map[string]string{"X-API-Key": c.key}
		}
		r := doURL(t, l.URL(), "GET", path, "", header, nil)
		if r.Status != c.status || (c.reason != "" && r.str("reason") != c.reason) {
			t.Errorf("%s: %d %s, want %d %s", name, r.Status, r.Raw, c.status, c.reason)
		}
	}
	// A user's bearer token is no admin key.
	tok, _, _ := l.signup(t, "key2@example.com", "key password", true)
	if r := l.do(t, "GET", path, tok, nil); r.Status != 401 {
		t.Errorf("bearer token on audit endpoint: %d", r.Status)
	}
}

// TestGeneratedAdminKeyGoesToAPrivateFile: without a configured key, one is
// generated into <data-dir>/admin-key (mode 0600); the log names the file
// and never holds the key, and a restart uses the same key without a word.
func TestGeneratedAdminKeyGoesToAPrivateFile(t *testing.T) {
	dir := t.TempDir()
	noKey := func(c *ServiceConfig) { c.AdminKey = "" }
	l := startLedger(t, dir, newClock(), noKey)
	path := filepath.Join(dir, adminKeyFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %#o, want 0600", path, st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	key := strings.TrimSpace(string(raw))
	if !strings.HasPrefix(key, "sla_") || len(key) < minAdminKeyLen {
		t.Fatalf("generated key file holds %q", raw)
	}
	_, _, sid := l.signup(t, "gen@example.com", "gen password", true)
	if r := doURL(t, l.URL(), "GET", "/v1/audit/sessions/"+sid, "", map[string]string{"X-API-Key": key}, nil); r.Status != 200 {
		t.Fatalf("generated key rejected: %d %s", r.Status, r.Raw)
	}
	l.stop()
	logs := l.logs.String()
	if !strings.Contains(logs, "generated an admin key") || !strings.Contains(logs, path) {
		t.Fatalf("the log does not say where the generated key is:\n%s", logs)
	}
	if strings.Contains(logs, key) || strings.Contains(logs, key[len("sla_"):]) {
		t.Fatal("the generated admin key reached the log")
	}

	l2 := startLedger(t, dir, newClock(), noKey)
	if r := doURL(t, l2.URL(), "GET", "/v1/audit/sessions/"+sid, "", map[string]string{"X-API-Key": key}, nil); r.Status != 200 {
		t.Fatalf("after a restart the generated key is rejected: %d %s", r.Status, r.Raw)
	}
	if logs := l2.logs.String(); strings.Contains(logs, "generated an admin key") || strings.Contains(logs, key) {
		t.Fatalf("second start generated or logged a key:\n%s", logs)
	}
}

// TestAsOfBoundaries checks as-of verdicts at and around every deadline,
// and the bad-input answers of the audit API.
func TestAsOfBoundaries(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	t0 := l.clock.Now()
	const pw = "boundary password"
	_, uid, keepSID := l.signup(t, "edge@example.com", pw, true) // idle deadline t0+30d
	plainTok, plainSID := l.login(t, "edge@example.com", pw, false)
	_ = plainTok
	outTok, outSID := l.login(t, "edge@example.com", pw, true)
	l.clock.Advance(time.Hour)
	if r := l.do(t, "POST", "/v1/auth/logout", outTok, nil); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	logoutAt := t0.Add(time.Hour)
	sec := time.Second
	cases := []struct {
		name   string
		sid    string
		at     time.Time
		valid  bool
		reason string
	}{
		{"before the start", keepSID, t0.Add(-sec), false, "not_started"},
		{"at the start", keepSID, t0, true, ""},
		{"one second before the idle deadline", keepSID, t0.Add(30*domain.Day - sec), true, ""},
		{"exactly at the idle deadline", keepSID, t0.Add(30 * domain.Day), false, "expired:idle"},
		{"one second after the idle deadline", keepSID, t0.Add(30*domain.Day + sec), false, "expired:idle"},
		{"one second before max", plainSID, t0.Add(24*time.Hour - sec), true, ""},
		{"exactly at max", plainSID, t0.Add(24 * time.Hour), false, "expired:max"},
		{"one second after max", plainSID, t0.Add(24*time.Hour + sec), false, "expired:max"},
		{"one second before the logout", outSID, logoutAt.Add(-sec), true, ""},
		{"at the logout", outSID, logoutAt, false, "revoked:logout"},
	}
	for _, c := range cases {
		r := l.admin(t, "/v1/audit/sessions/"+c.sid+"?at="+c.at.Format(time.RFC3339))
		if r.Status != 200 || r.get("valid") != c.valid || r.str("reason") != c.reason {
			t.Errorf("%s: %d %s, want valid=%v reason=%q", c.name, r.Status, r.Raw, c.valid, c.reason)
			continue
		}
		exp, _ := r.get("explanation").([]any)
		if len(exp) == 0 || r.str("summary") == "" {
			t.Errorf("%s: no explanation: %s", c.name, r.Raw)
		}
	}
	r := l.admin(t, "/v1/audit/sessions/"+outSID+"?at="+logoutAt.Format(time.RFC3339))
	exp, _ := r.get("explanation").([]any)
	if len(exp) != 2 || exp[1].(map[string]any)["role"] != "revoked" || !strings.Contains(r.str("summary"), "revoked: logout") {
		t.Errorf("logout explanation: %s", r.Raw)
	}
	r = l.admin(t, "/v1/audit/sessions/"+keepSID+"?at="+t0.Add(31*domain.Day).Format(time.RFC3339))
	if !strings.Contains(r.str("summary"), "idle window 30d") {
		t.Errorf("idle explanation: %s", r.str("summary"))
	}
	for name, c := range map[string]struct {
		path   string
		status int
		reason string
	}{
		"malformed at":    {"/v1/audit/sessions/" + keepSID + "?at=yesterday", 400, "INVALID_REQUEST"},
		"unknown session": {"/v1/audit/sessions/" + strings.Repeat("b", 32), 404, "SESSION_NOT_FOUND"},
		"garbage session": {"/v1/audit/sessions/nope", 404, "SESSION_NOT_FOUND"},
		"unknown user":    {"/v1/audit/users/nobody/events", 404, "USER_NOT_FOUND"},
		"malformed since": {"/v1/audit/users/" + uid + "/events?since=3", 400, "INVALID_REQUEST"},
	} {
		if r := l.admin(t, c.path); r.Status != c.status || r.str("reason") != c.reason {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	r = l.admin(t, "/v1/audit/users/"+uid+"/events")
	events, _ := r.get("events").([]any)
	if r.Status != 200 || len(events) != 5 { // registered, 3 started, logged out
		t.Fatalf("user events: %d %s", r.Status, r.Raw)
	}
	r = l.admin(t, "/v1/audit/users/"+uid+"/events?since="+logoutAt.Format(time.RFC3339))
	if events, _ := r.get("events").([]any); len(events) != 1 {
		t.Errorf("events since the logout: %s", r.Raw)
	}
}

// TestAuditCLIOnAStoppedDataDir runs every `ledger audit` command against
// the data dir of a stopped server and checks them against the live answers.
func TestAuditCLIOnAStoppedDataDir(t *testing.T) {
	dir := t.TempDir()
	l := startLedger(t, dir, newClock())
	tok, uid, sid := l.signup(t, "cli@example.com", "cli password", true)
	l.login(t, "cli@example.com", "cli password", false)
	l.clock.Advance(time.Minute)
	l.do(t, "POST", "/v1/auth/logout", tok, nil)
	at := l.clock.Now().Add(time.Second)
	live := l.admin(t, "/v1/audit/sessions/"+sid+"?at="+at.Format(time.RFC3339))
	liveDigest := l.admin(t, "/v1/audit/digest")
	total := l.lastSeq(t)
	cfg := l.cfg.LogConfig
	l.stop()

	ctx := context.Background()
	ll := openAuditLog(t, cfg)
	var out bytes.Buffer
	if err := auditVerdict(ctx, auditSource{store: ll.store}, sid, at, true, &out); err != nil {
		t.Fatal(err)
	}
	var cli map[string]any
	_ = json.Unmarshal(out.Bytes(), &cli)
	if cli["reason"] != live.str("reason") || cli["summary"] != live.str("summary") || cli["valid"] != false {
		t.Errorf("CLI verdict %v differs from the live audit answer %s", cli, live.Raw)
	}
	out.Reset()
	if err := auditVerdict(ctx, auditSource{store: ll.store}, sid, at, false, &out); err != nil || !strings.Contains(out.String(), "revoked: logout") {
		t.Errorf("human verdict: %v %q", err, out.String())
	}
	for name, who := range map[string][3]string{"user": {uid, "", ""}, "session": {"", sid, ""}, "email": {"", "", "CLI@example.com"}} {
		out.Reset()
		if err := auditHistory(ctx, auditSource{store: ll.store}, nil, who[0], who[1], who[2], time.Time{}, time.Time{}, true, &out); err != nil {
			t.Fatalf("history by %s: %v", name, err)
		}
		lines := strings.Count(out.String(), "\n")
		want := map[string]int{"user": 4, "session": 3, "email": 5}[name]
		if lines != want {
			t.Errorf("history by %s: %d lines, want %d:\n%s", name, lines, want, out.String())
		}
	}
	out.Reset()
	var status bytes.Buffer
	if err := auditExport(ctx, ll.store, time.Time{}, time.Time{}, &out, &status, false); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); uint64(n) != total || !strings.Contains(status.String(), "exported") {
		t.Errorf("export wrote %d lines (want %d); status %q", n, total, status.String())
	}
	out.Reset()
	if err := auditVerify(ctx, ll.store, nil, publicKeys(t, cfg), false, false, &out); err != nil || !strings.HasPrefix(out.String(), "OK:") || strings.Contains(out.String(), "note:") {
		t.Errorf("verify: %v %q", err, out.String())
	}
	if err := auditVerdict(ctx, auditSource{store: ll.store}, strings.Repeat("c", 32), at, false, &out); err == nil {
		t.Error("verdict for an unknown session succeeded")
	}
	ll.close()
	out.Reset()
	if err := auditDigest(dir, true, &out); err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	_ = json.Unmarshal(out.Bytes(), &d)
	if d["state_digest"] != liveDigest.str("state_digest") || d["stream_digest"] != liveDigest.str("stream_digest") {
		t.Errorf("CLI digest %v differs from the live one %s", d, liveDigest.Raw)
	}
}

// TestCorruptEventIsRejected: a message that is not an event does not stop
// the projection; it is recorded, counted, reported by readyz, and named by
// verify.
func TestCorruptEventIsRejected(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	_, uid, _ := l.signup(t, "corrupt@example.com", "corrupt password", true)
	ack, err := l.ll.store.JetStream().Publish(context.Background(), eventstore.UserSubject(uid), []byte(`{"type":"session_used","oops`))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := l.login(t, "corrupt@example.com", "corrupt password", true) // the user's subject goes on
	if v := l.verdict(t, tok); v.Status != 200 {
		t.Fatalf("login after the corrupt message: %+v", v)
	}
	r := l.do(t, "GET", "/readyz", "", nil)
	if r.Status != 200 || r.get("degraded") != true || r.get("rejected_events") != 1.0 || !strings.Contains(r.Raw, `"seq":`+jsonSeq(ack.Sequence)+`,`) {
		t.Fatalf("readyz: %d %s", r.Status, r.Raw)
	}
	if v := metricValue(t, l, `ledger_events_rejected_total{reason="decode"}`); v != 1 {
		t.Errorf("rejection counted %v times in metrics, want 1", v)
	}
	var out bytes.Buffer
	err = auditVerify(context.Background(), l.ll.store, nil, publicKeys(t, l.cfg.LogConfig), false, false, &out)
	if err == nil || !strings.Contains(out.String(), "corrupt") || !strings.Contains(out.String(), "seq "+jsonSeq(ack.Sequence)) {
		t.Fatalf("verify: %v %q", err, out.String())
	}
}

func jsonSeq(seq uint64) string {
	b, _ := json.Marshal(seq)
	return string(b)
}

// TestAuditCLIAgainstARunningServersNATS: the audit tools also work through
// a NATS URL while the server runs, without its data dir or HTTP.
func TestAuditCLIAgainstARunningServersNATS(t *testing.T) {
	parallelFault(t)
	l := startLedger(t, t.TempDir(), newClock(), func(c *ServiceConfig) { c.NATSListen = "127.0.0.1:0" })
	_, _, sid := l.signup(t, "url@example.com", "url password", true)
	ctx := context.Background()
	// The read-only identity, from a data dir it does not lock: the CLI
	// reads the stream only.
	ll := openAuditLog(t, LogConfig{DataDir: l.cfg.DataDir, NATSURL: l.ll.emb.ClientURL(), Stream: "LEDGER",
		NATS: natsauth.ClientConfig{NkeyFile: filepath.Join(l.cfg.DataDir, "nats", "reader.nk")}})
	var out bytes.Buffer
	if err := auditVerify(ctx, ll.store, nil, publicKeys(t, l.cfg.LogConfig), false, false, &out); err != nil || !strings.HasPrefix(out.String(), "OK: 4 events") {
		t.Fatalf("verify over NATS: %v %q", err, out.String())
	}
	out.Reset()
	if err := auditVerdict(ctx, auditSource{store: ll.store}, sid, l.clock.Now(), false, &out); err != nil || !strings.Contains(out.String(), "verdict  valid") {
		t.Fatalf("verdict over NATS: %v %q", err, out.String())
	}
}

// openAuditLog opens the log read-only, as the audit commands do.
func openAuditLog(t *testing.T, cfg LogConfig) *ledgerLog {
	t.Helper()
	ctx := context.Background()
	ll, err := openLog(ctx, cfg, discardLogger(), false)
	if err != nil {
		t.Fatalf("open log for audit: %v", err)
	}
	t.Cleanup(ll.close)
	if err := ll.openStore(ctx, cfg, false); err != nil {
		t.Fatalf("open stream for audit: %v", err)
	}
	return ll
}

// publicKeys are the public halves of a ledger's signing key ring.
func publicKeys(t *testing.T, cfg LogConfig) []domain.PublicKey {
	t.Helper()
	ring, err := keyfile.LoadRing(signingKeyPath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	var out []domain.PublicKey
	for _, k := range ring.Keys() {
		out = append(out, k.Public())
	}
	return out
}
