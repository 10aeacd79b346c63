package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/handlers/ports"
	"github.com/sessionledger/ledger/projections"
)

// caughtUp waits until l's projection has applied the whole stream.
func (l *testLedger) caughtUp(t *testing.T) {
	t.Helper()
	if err := l.uses.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if applied, last := l.proj.Applied(), l.lastSeq(t); applied != last {
			return fmt.Errorf("applied_seq %d, want the stream's last seq %d", applied, last)
		}
		return nil
	})
}

func (l *testLedger) ledgerStream(t *testing.T) jetstream.Stream {
	t.Helper()
	js, _ := jetstream.New(l.ll.nc)
	stream, err := js.Stream(context.Background(), "LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// TestUsesGoToTheUseSubject: a use that validate records lands on the
// user's use subject, standalone and published without the expected
// sequence (so the server never loads the user's history for it); it moves
// the session's idle deadline and leaves the user's subject, which logins
// and logouts append to at its sequence, where it was. The audit replays
// it: the as-of verdict and the history of the session account for it.
func TestUsesGoToTheUseSubject(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	t0 := l.clock.Now()
	tok, uid, sid := l.signup(t, "uses@example.com", "uses password", true)
	l.caughtUp(t)
	before, err := l.proj.UserVersion(uid)
	if err != nil {
		t.Fatal(err)
	}
	l.clock.Advance(2 * time.Hour)
	if r := l.do(t, "GET", "/v1/validate", tok, nil); r.Status != 200 {
		t.Fatalf("validate: %s", r.Raw)
	}
	l.caughtUp(t)

	stream := l.ledgerStream(t)
	m, err := stream.GetLastMsgForSubject(context.Background(), eventstore.UseSubject(uid))
	if err != nil {
		t.Fatalf("no message on %s: %v", eventstore.UseSubject(uid), err)
	}
	if h := m.Header.Get(jetstream.ExpectedLastSubjSeqHeader); h != "" || m.Header.Get(jetstream.MsgIDHeader) == "" {
		t.Errorf("use published with expected subject seq %q and msg id %q; want none and one", h, m.Header.Get(jetstream.MsgIDHeader))
	}
	use, err := domain.DecodeEvent(m.Data)
	if err != nil || use.Type != domain.EventSessionUsed || use.SessionID != sid || use.PrevHash != "" || !use.Time.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("use on the use subject: %+v %v", use, err)
	}
	for _, e := range l.events(t, eventstore.UserSubject(uid)) {
		if e.Type == domain.EventSessionUsed {
			t.Errorf("a use on the user's subject: %+v", e)
		}
	}
	if after, err := l.proj.UserVersion(uid); err != nil || after != before {
		t.Errorf("user version %+v (%v), want it unchanged by the use: %+v", after, err, before)
	}
	wantIdle := t0.Add(2*time.Hour + 30*domain.Day).Format(time.RFC3339)
	if v := l.verdict(t, tok); v.Status != 200 || v.Idle != wantIdle {
		t.Errorf("verdict after the use: %+v, want idle deadline %s", v, wantIdle)
	}
	// A login after the use still appends at the user's version.
	l.login(t, "uses@example.com", "uses password", false)

	// The audit replays the use: valid one second before the moved
	// deadline (the start alone would have expired it two hours earlier),
	// with the use cited at its stream position.
	at := t0.Add(2*time.Hour + 30*domain.Day - time.Second)
	r := l.admin(t, "/v1/audit/sessions/"+sid+"?at="+at.Format(time.RFC3339))
	if r.Status != 200 || r.get("valid") != true || !strings.Contains(r.Raw, `"role":"last_use"`) || !strings.Contains(r.Raw, `"seq":`+jsonSeq(m.Sequence)) {
		t.Errorf("as-of verdict with the use: %s", r.Raw)
	}
	var out bytes.Buffer
	if err := auditHistory(context.Background(), auditSource{store: l.ll.store}, nil, "", sid, "", time.Time{}, time.Time{}, false, &out); err != nil ||
		!strings.Contains(out.String(), fmt.Sprintf("#%-6d %s", m.Sequence, use.Time.Format(time.RFC3339))) {
		t.Errorf("session history: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := auditVerify(context.Background(), l.ll.store, nil, publicKeys(t, l.cfg.LogConfig), false, false, &out); err != nil ||
		!strings.HasPrefix(out.String(), "OK:") || !strings.Contains(out.String(), "use subjects (ledger.use.<user>): 1 events") {
		t.Errorf("verify: %v %q", err, out.String())
	}

	// Two instances recording the same use (one dedupe key) write it once.
	n := useCount(t, stream, uid)
	use2 := domain.SessionUse(uid, sid, t0.Add(3*time.Hour))
	fact := ports.Fact{Event: use2, DedupKey: "use:" + sid + ":test"}
	for range 2 {
		if stored, err := l.ll.store.RecordUses(context.Background(), []ports.Fact{fact}); err != nil || stored != 1 {
			t.Fatalf("record use: %d, %v", stored, err)
		}
	}
	if got := useCount(t, stream, uid); got != n+1 {
		t.Errorf("%d messages on the use subject after recording one use twice, want %d", got, n+1)
	}
}

func useCount(t *testing.T, stream jetstream.Stream, uid string) uint64 {
	t.Helper()
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(eventstore.UseSubject(uid)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[eventstore.UseSubject(uid)]
}

// TestUseSubjectRefusesAllButStandaloneUses: messages published straight
// to a use subject by a client holding NATS rights but not the signing key
// (a forgery), or holding it but writing what a use subject may not hold (a
// linked use, another event, another user's use), are rejected and recorded
// like any other rejected message, and change nothing; a genuine use
// published the same way is applied (the positive control). Verify names
// each, and a use whose content was altered.
func TestUseSubjectRefusesAllButStandaloneUses(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	t0 := l.clock.Now()
	tok, uid, sid := l.signup(t, "refuse@example.com", "refuse password", true)
	l.caughtUp(t)
	key, err := l.proj.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	userHead, err := l.proj.UserVersion(uid)
	if err != nil {
		t.Fatal(err)
	}
	subject := eventstore.UseSubject(uid)
	js, _ := jetstream.New(l.ll.nc)
	publish := func(e domain.Event, prev string, k domain.SigningKey, tamper func(*domain.Event)) uint64 {
		t.Helper()
		e.ID = newID()
		if err := e.Seal(prev, k); err != nil {
			t.Fatal(err)
		}
		if tamper != nil {
			tamper(&e)
		}
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.Publish(context.Background(), subject, data)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	forger, _ := domain.NewSigningKey(bytes.Repeat([]byte{0x66}, 32))
	far := t0.Add(400 * domain.Day) // beyond the idle deadline: would matter if applied
	forged := publish(domain.SessionUse(uid, sid, t0.Add(20*domain.Day)), "", forger, func(e *domain.Event) {
		e.KeyID = key.ID()
		e.Hash, _ = e.ComputeHash()
	})
	linked := publish(domain.SessionUse(uid, sid, t0.Add(21*domain.Day)), userHead.Head, key, nil)
	logout := domain.SessionUse(uid, sid, t0.Add(22*domain.Day))
	logout.Type = domain.EventSessionLoggedOut
	wrongType := publish(logout, "", key, nil)
	otherUser := publish(domain.SessionUse("someone-else", sid, t0.Add(23*domain.Day)), "", key, nil)
	altered := publish(domain.SessionUse(uid, sid, t0.Add(24*domain.Day)), "", key, func(e *domain.Event) { e.Time = far })
	genuine := publish(domain.SessionUse(uid, sid, t0.Add(10*domain.Day)), "", key, nil)
	l.caughtUp(t)

	rejected, _, err := l.proj.Rejected(0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{forged: projections.RejectSignature, linked: projections.RejectChain,
		wrongType: projections.RejectInvalid, otherUser: projections.RejectInvalid, altered: projections.RejectHash}
	got := map[uint64]string{}
	for _, r := range rejected {
		if r.Subject == subject {
			got[r.Seq] = r.Reason
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rejected on %s: %v, want %v", subject, got, want)
	}
	if err := l.proj.Accepted(context.Background(), genuine); err != nil {
		t.Errorf("genuine use: %v", err)
	}
	s, err := l.proj.Session(sid)
	if err != nil || !s.LastUseAt().Equal(t0.Add(10*domain.Day)) || !s.Snapshot().RevokedAt.IsZero() {
		t.Fatalf("session after the messages: %+v %v; want only the genuine use applied", s.Snapshot(), err)
	}
	if after, _ := l.proj.UserVersion(uid); after != userHead {
		t.Errorf("user version moved: %+v, was %+v", after, userHead)
	}
	if v := l.verdict(t, tok); v.Status != 200 {
		t.Errorf("verdict: %+v", v)
	}

	// The audit's replay passes over them as the projection did.
	r := l.admin(t, "/v1/audit/sessions/"+sid+"?at="+t0.Add(35*domain.Day).Format(time.RFC3339))
	if r.Status != 200 || r.get("valid") != true || !strings.Contains(r.Raw, `"seq":`+jsonSeq(genuine)) {
		t.Errorf("as-of verdict: %s", r.Raw)
	}
	var out bytes.Buffer
	err = auditVerify(context.Background(), l.ll.store, nil, publicKeys(t, l.cfg.LogConfig), false, false, &out)
	for seq, kind := range map[uint64]string{forged: eventstore.ProblemSignature, linked: eventstore.ProblemMisplaced,
		wrongType: eventstore.ProblemMisplaced, otherUser: eventstore.ProblemMisplaced, altered: eventstore.ProblemAltered} {
		if !strings.Contains(out.String(), fmt.Sprintf("seq %d (%s)", seq, subject)) || !strings.Contains(out.String(), kind) {
			t.Errorf("verify does not name seq %d as %s: %v\n%s", seq, kind, err, out.String())
		}
	}
	if err == nil || strings.Contains(out.String(), fmt.Sprintf("seq %d ", genuine)) {
		t.Errorf("verify: %v\n%s", err, out.String())
	}
}
