package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/natsauth"
)

// connectAs opens a NATS client to a listening instance's embedded server
// with one of its identities ("writer", "reader"), or anonymously ("").
func connectAs(t *testing.T, l *testLedger, identity string) (*nats.Conn, error) {
	t.Helper()
	var cfg natsauth.ClientConfig
	if identity != "" {
		cfg.NkeyFile = filepath.Join(l.cfg.DataDir, "nats", identity+".nk")
	}
	opts, err := cfg.Options()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(l.ll.emb.ClientURL(), append(opts, nats.MaxReconnects(0), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	return nc, nil
}

// forge builds an event that looks like the ledger's to anyone without its
// key: linked to the subject's real head, correctly hashed, naming the
// ledger's key id, and "signed" with another key.
func forge(t *testing.T, l *testLedger, subject string, e domain.Event) []byte {
	t.Helper()
	ctx := context.Background()
	js, _ := jetstream.New(l.ll.nc)
	stream, err := js.Stream(ctx, "LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	head, err := domain.DecodeEvent(last.Data)
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := domain.NewSigningKey(bytes.Repeat([]byte{0x66}, 32))
	e.ID = newID()
	if err := e.Seal(head.Hash, forger); err != nil {
		t.Fatal(err)
	}
	e.KeyID = head.KeyID
	if e.Hash, err = e.ComputeHash(); err != nil {
		t.Fatal(err)
	}
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestOnlyTheLedgerWritesItsLog: NATS access is authenticated and split
// into a writer and a reader identity; and a client holding the writer
// identity (every NATS right) but not the signing key cannot make any
// instance accept an event.
func TestOnlyTheLedgerWritesItsLog(t *testing.T) {
	clock := newClock()
	a := startLedger(t, t.TempDir(), clock, listening)
	b := startLedger(t, t.TempDir(), clock, joining(a))
	const email, pw = "victim@example.com", "victim password"
	tok, uid, sid := a.signup(t, email, pw, true)
	ctx := context.Background()

	if _, err := connectAs(t, a, ""); err == nil || !strings.Contains(natsauth.Explain(a.ll.emb.ClientURL(), err).Error(), "authorization") {
		t.Fatalf("anonymous client: %v, want refused for authorization", err)
	}
	reader, err := connectAs(t, a, "reader")
	if err != nil {
		t.Fatalf("reader identity: %v", err)
	}
	rjs, _ := jetstream.New(reader)
	// A refused request gets no answer, only an async permission error:
	// bound the waits.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := rjs.Publish(short, eventstore.UserSubject(uid), []byte("{}")); err == nil {
		t.Fatal("the reader published into the ledger")
	}
	rstream, err := rjs.Stream(ctx, "LEDGER")
	if err != nil {
		t.Fatalf("reader stream info: %v", err)
	}
	cfg := rstream.CachedInfo().Config
	cfg.MaxMsgsPerSubject = 1
	short2, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if _, err := rjs.UpdateStream(short2, cfg); err == nil {
		t.Fatal("the reader changed the stream")
	}
	var read int
	if err := eventstore.NewReader(rstream).Read(ctx, eventstore.ReadOptions{}, func(eventstore.Record) error { read++; return nil }); err != nil || read == 0 {
		t.Fatalf("reader read %d messages: %v", read, err)
	}

	writer, err := connectAs(t, a, "writer")
	if err != nil {
		t.Fatal(err)
	}
	wjs, _ := jetstream.New(writer)
	publish := func(data []byte) uint64 {
		t.Helper()
		ack, err := wjs.Publish(ctx, eventstore.UserSubject(uid), data)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}

	// A forged session with a token the forger knows, correctly chained.
	raw, fsid, hash, err := domain.NewToken(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	user := domain.NewUser(uid, email, "", nil)
	forgedStart := publish(forge(t, a, eventstore.UserSubject(uid), user.StartSession(fsid, hash, "password", true, false, clock.Now(), domain.DefaultPolicy())))
	// A logout of the real session with no link and a made-up hash.
	lo, _ := domain.NewUser(uid, email, "", []*domain.Session{mustSession(t, a, sid)}).Logout(sid, clock.Now())
	lo.ID, lo.PrevHash, lo.Hash = newID(), "", "sha256:"+strings.Repeat("0", 64)
	data, _ := lo.Encode()
	forgedLogout := publish(data)

	for _, l := range []*testLedger{a, b} {
		checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			sig := metricValue(t, l, `ledger_events_rejected_total{reason="signature"}`)
			hash := metricValue(t, l, `ledger_events_rejected_total{reason="hash"}`)
			if sig != 1 || hash != 1 {
				return fmt.Errorf("%s rejected %v events for their signature and %v for their hash, want 1 and 1", l.URL(), sig, hash)
			}
			return nil
		})
		if v := l.verdict(t, raw); v.Status != http.StatusUnauthorized || v.Reason != "TOKEN_INVALID" {
			t.Errorf("forged token on %s: %+v, want 401 TOKEN_INVALID", l.URL(), v)
		}
		if v := l.verdict(t, tok); v.Status != http.StatusOK {
			t.Errorf("real token after a forged logout on %s: %+v, want still valid", l.URL(), v)
		}
		r := l.do(t, "GET", "/readyz", "", nil)
		if r.Status != 200 || r.get("degraded") != true || r.get("rejected_events") != 2.0 {
			t.Errorf("readyz on %s: %d %s", l.URL(), r.Status, r.Raw)
		}
	}
	// The forged session cannot be used against the real ones either, and
	// the user's own writes go on after the forgeries.
	if r := a.do(t, "POST", "/v1/auth/logout-others", raw, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("logout-others with the forged token: %d %s", r.Status, r.Raw)
	}
	tok2, _ := b.login(t, email, pw, false)
	r := b.do(t, "POST", "/v1/auth/logout-others", tok2, nil)
	if r.Status != 200 || r.get("response", "revoked") != 1.0 {
		t.Fatalf("the user's logout-others after the forgeries: %d %s", r.Status, r.Raw)
	}
	if v := doURL(t, a.URL(), "GET", "/v1/validate?touch=false", tok, minSeq(seqOf(t, r)), nil); v.str("reason") != "TOKEN_REVOKED" {
		t.Fatalf("real session after the user's logout-others: %d %s", v.Status, v.Raw)
	}

	// The auditor, with only the public key, names both.
	var out bytes.Buffer
	err = auditVerify(ctx, a.ll.store, nil, publicKeys(t, a.cfg.LogConfig), false, false, &out)
	if !errors.Is(err, eventstore.ErrTampered) {
		t.Fatalf("verify: %v, want it to fail", err)
	}
	for _, want := range []string{"seq " + jsonSeq(forgedStart), "signature", "seq " + jsonSeq(forgedLogout), "altered"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("verify output does not name %q:\n%s", want, out.String())
		}
	}
}

func mustSession(t *testing.T, l *testLedger, id string) *domain.Session {
	t.Helper()
	s, err := l.proj.Session(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStreamTamperingIsDetected: changes to the stream that deny_delete and
// deny_purge do not prevent make /readyz answer 503 STREAM_TAMPERED, writes
// answer 503 with a reason (never 500), and a restart over a deleted stream
// is refused rather than starting an empty ledger.
func TestStreamTamperingIsDetected(t *testing.T) {
	start := func(t *testing.T) (*testLedger, string, jetstream.JetStream) {
		t.Helper()
		l := startLedger(t, t.TempDir(), newClock(), listening, withMaxLag(time.Second))
		tok, _, _ := l.signup(t, "tamper@example.com", "tamper password", true)
		l.login(t, "tamper@example.com", "tamper password", false)
		nc, err := connectAs(t, l, "writer") // every NATS right, as an operator has
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		return l, tok, js
	}
	update := func(t *testing.T, js jetstream.JetStream, change func(*jetstream.StreamConfig)) {
		t.Helper()
		s, err := js.Stream(context.Background(), "LEDGER")
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		change(&cfg)
		if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	tampered := func(t *testing.T, l *testLedger, finding string) {
		t.Helper()
		var r response
		checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if r = l.do(t, "GET", "/readyz", "", nil); r.Status != 503 || r.str("reason") != "STREAM_TAMPERED" {
				return fmt.Errorf("/readyz %d %s, want 503 STREAM_TAMPERED", r.Status, r.Raw)
			}
			return nil
		})
		if !strings.Contains(r.Raw, finding) {
			t.Fatalf("readyz does not say %q: %s", finding, r.Raw)
		}
		if metricValue(t, l, "ledger_stream_tampered") != 1 {
			t.Fatal("ledger_stream_tampered is not 1")
		}
	}

	t.Run("max_msgs_per_subject", func(t *testing.T) {
		l, _, js := start(t)
		update(t, js, func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 })
		tampered(t, l, "max_msgs_per_subject is 1")
		// A fresh instance over what is left refuses to rebuild.
		l.stop()
		var out bytes.Buffer
		err := rebuild(context.Background(), l.cfg.LogConfig, &out, discardLogger())
		if !errors.Is(err, eventstore.ErrStreamTampered) || !strings.Contains(err.Error(), "no longer holds the ledger") {
			t.Fatalf("rebuild over a stream that lost events: %v", err)
		}
	})
	t.Run("sealed", func(t *testing.T) {
		l, tok, js := start(t)
		update(t, js, func(c *jetstream.StreamConfig) { c.Sealed = true })
		tampered(t, l, "sealed")
		if r := l.do(t, "POST", "/v1/auth/login", "", creds{"tamper@example.com", "tamper password", false}); r.Status != 503 || r.str("reason") != "STREAM_SEALED" {
			t.Fatalf("login on a sealed stream: %d %s", r.Status, r.Raw)
		}
		if r := l.do(t, "POST", "/v1/auth/logout", tok, nil); r.Status != 503 || r.str("reason") != "STREAM_SEALED" {
			t.Fatalf("logout on a sealed stream: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		l, tok, js := start(t)
		if err := js.DeleteStream(context.Background(), "LEDGER"); err != nil {
			t.Fatal(err)
		}
		tampered(t, l, "does not exist")
		if r := l.do(t, "POST", "/v1/auth/logout", tok, nil); r.Status != 503 || r.str("reason") != "STREAM_MISSING" {
			t.Fatalf("logout with the stream gone: %d %s", r.Status, r.Raw)
		}
		if r := l.do(t, "POST", "/v1/auth/signup", "", creds{"new@example.com", "new password", false}); r.Status != 503 {
			t.Fatalf("signup with the stream gone: %d %s", r.Status, r.Raw)
		}
		cfg := l.cfg
		l.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		svc, err := StartService(ctx, cfg)
		if err == nil {
			svc.Close(ctx)
			t.Fatal("a ledger whose projection applied events started over a deleted stream")
		}
		if !strings.Contains(err.Error(), "will not start over it or create a new, empty stream") {
			t.Fatalf("restart over a deleted stream: %v", err)
		}
	})
}

// offsetClock is another instance's clock: the shared fake clock plus a
// fixed skew.
func offsetClock(c *fakeClock, skew time.Duration) func() time.Time {
	return func() time.Time { return c.Now().Add(skew) }
}

// TestRevocationIndependentOfClocks: instances whose clocks run 5 s ahead
// and 5 s behind agree on every revocation at once, in log order.
func TestRevocationIndependentOfClocks(t *testing.T) {
	clock := newClock()
	ahead := startLedger(t, t.TempDir(), clock, listening, func(c *ServiceConfig) { c.Now = offsetClock(clock, 5*time.Second) })
	behind := startLedger(t, t.TempDir(), clock, joining(ahead), func(c *ServiceConfig) { c.Now = offsetClock(clock, -5*time.Second) })
	both := []*testLedger{ahead, behind}
	const email, pw = "skew@example.com", "skewed password"
	ahead.signup(t, email, pw, true)

	// Read-your-writes by sequence, so each check is "at once".
	check := func(what, token string, seq uint64, wantStatus int, wantReason string) {
		t.Helper()
		for _, l := range both {
			r := doURL(t, l.URL(), "GET", "/v1/validate?touch=false", token, minSeq(seq), nil)
			if r.Status != wantStatus || r.str("reason") != wantReason {
				t.Fatalf("%s, validated on the instance %s: %d %s, want %d %s", what, l.URL(), r.Status, r.Raw, wantStatus, wantReason)
			}
		}
	}
	login := func(l *testLedger) (string, uint64) {
		r := l.do(t, "POST", "/v1/auth/login", "", creds{email, pw, true})
		if r.Status != 200 {
			t.Fatalf("login: %d %s", r.Status, r.Raw)
		}
		return r.str("response", "token"), seqOf(t, r)
	}

	// Started on the fast clock: valid on the slow one too.
	fast, seq := login(ahead)
	check("a session started 5 s ahead", fast, seq, 200, "")
	// Logged out on the slow clock: revoked everywhere at once.
	r := behind.do(t, "POST", "/v1/auth/logout", fast, nil)
	if r.Status != 200 {
		t.Fatalf("logout on the slow instance: %d %s", r.Status, r.Raw)
	}
	check("a logout decided 10 s behind the session's start", fast, seqOf(t, r), 401, "TOKEN_REVOKED")

	// A logout decided on the fast clock is final on the slow one.
	// The login was made on the other instance: wait for it (min_seq), or
	// the logout may find no such session yet.
	slow, loginSeq := login(behind)
	r = doURL(t, ahead.URL(), "POST", "/v1/auth/logout", slow, minSeq(loginSeq), nil)
	if r.Status != 200 {
		t.Fatalf("logout on the fast instance: %d %s", r.Status, r.Raw)
	}
	check("a logout decided 5 s ahead", slow, seqOf(t, r), 401, "TOKEN_REVOKED")

	// logout-others decided on the slow clock revokes a session started on
	// the fast one (and the signup's), and it stays revoked an hour later.
	other, _ := login(ahead)
	keeper, keeperSeq := login(behind)
	r = doURL(t, behind.URL(), "POST", "/v1/auth/logout-others", keeper, minSeq(keeperSeq), nil)
	if r.Status != 200 || r.get("response", "revoked") != 2.0 {
		t.Fatalf("logout-others on the slow instance: %d %s, want 2 revoked", r.Status, r.Raw)
	}
	check("logout-others decided behind the session's start", other, seqOf(t, r), 401, "TOKEN_REVOKED")
	clock.Advance(time.Hour)
	check("an hour later", other, seqOf(t, r), 401, "TOKEN_REVOKED")
	check("the kept session", keeper, seqOf(t, r), 200, "")

	// Times on the user's subject never go backwards, whichever clock
	// decided.
	var last time.Time
	_, uid := userOfToken(t, ahead, keeper)
	for _, e := range ahead.events(t, eventstore.UserSubject(uid)) {
		if e.Time.Before(last) {
			t.Fatalf("event %s (%s) at %s is before its predecessor at %s", e.ID, e.Type, e.Time, last)
		}
		last = e.Time
	}
}

func userOfToken(t *testing.T, l *testLedger, token string) (sessionID, userID string) {
	t.Helper()
	r := l.do(t, "GET", "/v1/validate?touch=false", token, nil)
	return r.str("session_id"), r.str("user_id")
}
