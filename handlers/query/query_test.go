package query

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/handlerstest"
	"github.com/sessionledger/ledger/handlers/ports"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// startEvent decides a live 12-month session with a fresh token.
func startEvent(t *testing.T, userID string, at time.Time) (domain.Event, string) {
	t.Helper()
	raw, sid, hash, err := domain.NewToken(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return domain.NewUser(userID, "u@example.com", "h", nil).StartSession(sid, hash, "password", true, false, at, domain.DefaultPolicy()), raw
}

// session starts a live 12-month session with a fresh token.
func session(t *testing.T, userID string, at time.Time) (*domain.Session, string) {
	t.Helper()
	e, raw := startEvent(t, userID, at)
	s, err := domain.SessionFromEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return s, raw
}

// startSession appends a live 12-month session with a fresh token to l,
// and returns it as l holds it.
func startSession(t *testing.T, l *handlerstest.Ledger, userID string, at time.Time) (*domain.Session, string) {
	t.Helper()
	e, raw := startEvent(t, userID, at)
	appendTo(t, l, e)
	s, err := l.Session(e.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	return s, raw
}

// appendTo appends events to their users' histories in l, each at the
// version its history has.
func appendTo(t *testing.T, l *handlerstest.Ledger, events ...domain.Event) {
	t.Helper()
	ctx := context.Background()
	for _, e := range events {
		v, err := l.UserVersion(ctx, e.UserID)
		if err == nil {
			_, err = l.AppendUser(ctx, e.UserID, v, e)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func recorder(t *testing.T, log useLog, queue int) (*UseRecorder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := NewUseRecorder(UseRecorderConfig{Granularity: time.Hour, QueueSize: queue, Log: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return r, reg
}

// drain runs the recorder until everything queued is recorded (or has
// failed), then stops it.
func drain(t *testing.T, r *UseRecorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	go r.Run(ctx)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	r.Wait()
}

// TestFullQueueDropsUsesAndCountsThem: recording never slows validation;
// when the queue is full a use is dropped and counted, and a session with a
// use on its way is not queued twice.
func TestFullQueueDropsUsesAndCountsThem(t *testing.T) {
	log := handlerstest.NewLedger()
	r, _ := recorder(t, log, 1)
	s1, _ := session(t, "u1", t0)
	s2, _ := session(t, "u2", t0)
	at := t0.Add(2 * time.Hour)
	if !r.Touch(s1, at) {
		t.Fatal("first use not queued")
	}
	if r.Touch(s1, at.Add(time.Minute)) {
		t.Fatal("a second use of a session with one on its way was queued")
	}
	if r.Touch(s2, at) {
		t.Fatal("a use was queued into a full queue")
	}
	if got := testutil.ToFloat64(r.dropped); got != 1 {
		t.Fatalf("dropped counter %v, want 1", got)
	}
	drain(t, r)
	facts := log.Facts()
	if len(facts) != 1 || facts[0].Event.SessionID != s1.ID() || facts[0].Event.Type != domain.EventSessionUsed {
		t.Fatalf("recorded %+v, want the one queued use of s1", facts)
	}
	if k := facts[0].DedupKey; !strings.HasPrefix(k, "use:"+s1.ID()+":") {
		t.Fatalf("dedup key %q: instances recording the same use in one bucket must share it", k)
	}
	// With its use recorded, s2 can be queued again.
	if !r.Touch(s2, at) {
		t.Fatal("s2 not queued once the queue had room")
	}
}

func TestUseWithinGranularityIsNotRecorded(t *testing.T) {
	r, _ := recorder(t, handlerstest.NewLedger(), 8)
	s, _ := session(t, "u1", t0)
	if r.Touch(s, t0.Add(59*time.Minute)) {
		t.Fatal("a use within the granularity of the last one was queued")
	}
	if !r.Touch(s, t0.Add(time.Hour)) {
		t.Fatal("a use one granularity after the last was not queued")
	}
}

func TestFailedAppendsAreCounted(t *testing.T) {
	log := handlerstest.NewLedger()
	log.FailFacts(errors.New("log down"))
	r, _ := recorder(t, log, 8)
	s, _ := session(t, "u1", t0)
	r.Touch(s, t0.Add(2*time.Hour))
	drain(t, r)
	if got := testutil.ToFloat64(r.failed); got != 1 {
		t.Fatalf("failed counter %v, want 1", got)
	}
}

func TestValidate(t *testing.T) {
	l := handlerstest.NewLedger()
	live, liveTok := startSession(t, l, "u1", t0)
	revoked, revokedTok := startSession(t, l, "u1", t0)
	out, _ := domain.NewUser("u1", "u@example.com", "h", []*domain.Session{revoked}).Logout(revoked.ID(), t0.Add(time.Minute))
	appendTo(t, l, out)
	uses, _ := recorder(t, l, 8)
	now := t0.Add(2 * time.Hour)
	q, err := New(Deps{Sessions: l, Uses: uses, Log: l, Now: func() time.Time { return now }, APIKeys: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := q.Validate.Handle(ctx, liveTok, true)
	if err != nil || !v.Verdict.Valid || !v.Verdict.IdleExpiresAt.Equal(now.Add(30*domain.Day)) {
		t.Fatalf("live token: %+v %v; want valid with the idle deadline the queued use gives", v.Verdict, err)
	}
	// While that use waits to be recorded, later validates answer with the
	// same deadline, not the one before it.
	queuedAt := now
	now = now.Add(time.Minute)
	if v, err := q.Validate.Handle(ctx, liveTok, true); err != nil || !v.Verdict.IdleExpiresAt.Equal(queuedAt.Add(30*domain.Day)) {
		t.Fatalf("live token, use still queued: %+v %v; want the idle deadline of the queued use", v.Verdict, err)
	}
	if got := testutil.ToFloat64(uses.queued); got != 1 {
		t.Fatalf("%v uses queued, want 1", got)
	}
	if v, err := q.Validate.Handle(ctx, revokedTok, false); err != nil || v.Verdict.Reason != domain.ReasonRevokedLogout {
		t.Fatalf("revoked token: %+v %v", v.Verdict, err)
	}
	wrongSecret := liveTok[:len(liveTok)-4] + "AAAA"
	for name, tok := range map[string]string{"wrong secret": wrongSecret, "malformed": "slt_x", "empty": "", "unknown": strings.Replace(liveTok, live.ID(), strings.Repeat("0", 32), 1)} {
		if _, err := q.Validate.Handle(ctx, tok, false); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s token: %v, want ErrTokenInvalid", name, err)
		}
	}
	all, err := ParseSessionsQuery(nil, nil, ptr("all"))
	if err != nil {
		t.Fatal(err)
	}
	page, err := q.Sessions.Handle(ctx, "u1", live.ID(), all)
	if err != nil || len(page.Sessions) != 2 || page.Next != "" {
		t.Fatalf("sessions: %+v %v", page, err)
	}
	for _, s := range page.Sessions {
		if want := map[bool]string{true: "active", false: "revoked"}[s.SessionID == live.ID()]; s.Status != want || s.Current != (s.SessionID == live.ID()) {
			t.Errorf("session %s: %+v, want %s", s.SessionID, s, want)
		}
	}
	if _, err := New(Deps{}); err == nil {
		t.Fatal("New accepted no dependencies")
	}
}

// fakeAuditLog holds one user's history and one email's claims.
type fakeAuditLog struct {
	user   string
	events []ports.StoredEvent
	claims []ports.StoredEvent
}

func (f fakeAuditLog) UserHistory(_ context.Context, userID string) ([]ports.StoredEvent, error) {
	if userID != f.user {
		return nil, nil
	}
	return append([]ports.StoredEvent(nil), f.events...), nil
}

func (f fakeAuditLog) EmailHistory(context.Context, string) (string, []ports.StoredEvent, error) {
	return f.user, f.claims, nil
}

func TestAuditQueries(t *testing.T) {
	l := handlerstest.NewLedger()
	s1, _ := startSession(t, l, "u1", t0)
	s2, _ := startSession(t, l, "u1", t0.Add(time.Hour))
	ev := func(seq uint64, e domain.Event) ports.StoredEvent { return ports.StoredEvent{Seq: seq, Event: e} }
	started := func(s *domain.Session) domain.Event {
		return domain.Event{Type: domain.EventSessionStarted, UserID: "u1", SessionID: s.ID(), Time: s.StartedAt()}
	}
	log := fakeAuditLog{user: "u1",
		events: []ports.StoredEvent{ev(2, started(s1)), ev(4, domain.SessionUse("u1", s1.ID(), t0.Add(3*time.Hour))), ev(5, started(s2)),
			{Seq: 6, Err: errors.New("not authentic")}},
		claims: []ports.StoredEvent{ev(1, domain.ClaimEmail("u1", "u@example.com", t0))},
	}
	h := AuditHandler{Owners: l, Log: log}
	ctx := context.Background()
	seqs := func(es []ports.StoredEvent) (out []uint64) {
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	if got, err := h.EmailEvents(ctx, "u@example.com", time.Time{}, time.Time{}); err != nil || fmt.Sprint(seqs(got)) != "[1 2 4 5 6]" {
		t.Fatalf("email events %v %v, want the claim and the user's events in log order", seqs(got), err)
	}
	if got, err := h.SessionEvents(ctx, s1.ID(), time.Time{}, time.Time{}); err != nil || fmt.Sprint(seqs(got)) != "[2 4 6]" {
		t.Fatalf("session events %v %v, want s1's (and the unjudgeable message)", seqs(got), err)
	}
	if got, err := h.UserEvents(ctx, "u1", t0.Add(2*time.Hour), time.Time{}); err != nil || fmt.Sprint(seqs(got)) != "[4 6]" {
		t.Fatalf("user events since +2h: %v %v", seqs(got), err)
	}
	if _, err := h.UserEvents(ctx, "nobody", time.Time{}, time.Time{}); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
}

func ptr(s string) *string { return &s }

// TestSessionsPages: the live list pages through the live sessions only,
// newest first, each exactly once; status=all adds the dead ones; bad
// parameters are refused.
func TestSessionsPages(t *testing.T) {
	l := handlerstest.NewLedger()
	var live []string
	var logouts []domain.Event
	for i := range 7 {
		s, _ := startSession(t, l, "u1", t0.Add(time.Duration(i)*time.Minute))
		if i%3 == 0 {
			out, _ := domain.NewUser("u1", "u@example.com", "h", []*domain.Session{s}).Logout(s.ID(), t0.Add(time.Hour))
			// Appended after every start: a history's times never go
			// backwards, so a start after it would be moved to its time.
			logouts = append(logouts, out)
		} else {
			live = append([]string{s.ID()}, live...) // newest first
		}
	}
	appendTo(t, l, logouts...)
	h := SessionsHandler{Sessions: l, Now: func() time.Time { return t0.Add(2 * time.Hour) }}
	walk := func(status *string) (ids []string, pages int) {
		var cursor *string
		for {
			q, err := ParseSessionsQuery(ptr("2"), cursor, status)
			if err != nil {
				t.Fatal(err)
			}
			page, err := h.Handle(context.Background(), "u1", "", q)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, s := range page.Sessions {
				ids = append(ids, s.SessionID)
			}
			if page.Next == "" {
				return ids, pages
			}
			cursor = &page.Next
		}
	}
	if ids, pages := walk(nil); !slices.Equal(ids, live) || pages != 2 {
		t.Fatalf("live pages: %v in %d pages, want %v in 2", ids, pages, live)
	}
	if ids, _ := walk(ptr("all")); len(ids) != 7 {
		t.Fatalf("status=all: %d sessions, want 7", len(ids))
	}
	for name, c := range map[string]struct {
		limit, cursor, status *string
		want                  error
	}{
		"limit 0":        {limit: ptr("0"), want: ErrInvalidLimit},
		"limit 201":      {limit: ptr("201"), want: ErrInvalidLimit},
		"limit word":     {limit: ptr("ten"), want: ErrInvalidLimit},
		"limit empty":    {limit: ptr(""), want: ErrInvalidLimit},
		"cursor garbage": {cursor: ptr("!!"), want: ErrInvalidCursor},
		"cursor short":   {cursor: ptr("AAAA"), want: ErrInvalidCursor},
		"status active":  {status: ptr("active"), want: ErrInvalidStatus},
		"status empty":   {status: ptr(""), want: ErrInvalidStatus},
	} {
		if _, err := ParseSessionsQuery(c.limit, c.cursor, c.status); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if q, err := ParseSessionsQuery(nil, ptr(""), nil); err != nil || q.Limit != DefaultSessionsLimit || q.After != nil || q.All {
		t.Errorf("defaults: %+v %v", q, err)
	}
}

// batchLog records the size of every batch it is handed.
type batchLog struct {
	mu      sync.Mutex
	batches []int
	facts   []ports.Fact
	first   chan struct{} // closed at the first batch, if set
}

func (l *batchLog) RecordUses(_ context.Context, facts []ports.Fact) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batches = append(l.batches, len(facts))
	l.facts = append(l.facts, facts...)
	if l.first != nil && len(l.batches) == 1 {
		close(l.first)
	}
	return len(facts), nil
}

func (l *batchLog) recorded() ([]int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.batches), len(l.facts)
}

// touchMany queues a use of n fresh sessions.
func touchMany(t *testing.T, r *UseRecorder, n int) {
	t.Helper()
	for i := range n {
		s, _ := session(t, fmt.Sprintf("u%d", i), t0)
		if !r.Touch(s, t0.Add(2*time.Hour)) {
			t.Fatalf("use %d not queued", i)
		}
	}
}

func pacedRecorder(t *testing.T, log useLog, queue int, spread time.Duration) *UseRecorder {
	t.Helper()
	r, err := NewUseRecorder(UseRecorderConfig{Granularity: time.Hour, QueueSize: queue, Spread: spread, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPacedRecorderSpreadsABurst: a burst below half the queue is handed to
// the log a pace tick's worth at a time, not all at once; past half the
// queue, or without a spread, it goes in full batches.
func TestPacedRecorderSpreadsABurst(t *testing.T) {
	for _, c := range []struct {
		name         string
		queue, burst int
		spread       time.Duration
		first        int
	}{
		{name: "paced at the floor rate", queue: 4096, burst: 1000, spread: time.Hour, first: int(MinUseRate * paceTick.Seconds())},
		{name: "paced at backlog/spread", queue: 4096, burst: 2000, spread: time.Second, first: int(2000 * paceTick.Seconds())},
		{name: "half the queue: no pacing", queue: 2048, burst: 1024, spread: time.Hour, first: maxUseBatch},
		{name: "no spread: no pacing", queue: 4096, burst: 1000, spread: 0, first: maxUseBatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			log := &batchLog{first: make(chan struct{})}
			r := pacedRecorder(t, log, c.queue, c.spread)
			touchMany(t, r, c.burst)
			ctx, cancel := context.WithCancel(context.Background())
			go r.Run(ctx)
			<-log.first // before Flush, which lifts the pacing
			if err := r.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			cancel()
			r.Wait()
			batches, n := log.recorded()
			if n != c.burst {
				t.Fatalf("%d uses recorded, want %d", n, c.burst)
			}
			if batches[0] != c.first {
				t.Fatalf("first batch of %d uses, want %d (batches %v)", batches[0], c.first, batches)
			}
		})
	}
}

// TestPace: the batch and rate a backlog gets.
func TestPace(t *testing.T) {
	r := pacedRecorder(t, &batchLog{}, 4096, 10*time.Second)
	for _, c := range []struct {
		backlog, size int
		rate          float64
	}{
		{backlog: 1, size: int(MinUseRate * paceTick.Seconds()), rate: MinUseRate},
		{backlog: 500, size: int(MinUseRate * paceTick.Seconds()), rate: MinUseRate},
		{backlog: 2000, size: int(200 * paceTick.Seconds()), rate: 200},
		{backlog: 2047, size: int(204.7 * paceTick.Seconds()), rate: 204.7},
		{backlog: 2048, size: maxUseBatch, rate: 0},
	} {
		if size, rate := r.pace(c.backlog); size != c.size || rate != c.rate {
			t.Errorf("pace(%d) = %d, %v; want %d, %v", c.backlog, size, rate, c.size, c.rate)
		}
	}
	r.hurry.Add(1)
	if size, rate := r.pace(1); size != maxUseBatch || rate != 0 {
		t.Errorf("pace while a Flush waits = %d, %v; want no pacing", size, rate)
	}
}

// TestPacedRecorderFlushesEverythingOnStop: stopping a paced recorder with
// a backlog records every queued use before Wait returns.
func TestPacedRecorderFlushesEverythingOnStop(t *testing.T) {
	log := &batchLog{}
	r := pacedRecorder(t, log, 8192, time.Hour)
	touchMany(t, r, 3000)
	ctx, cancel := context.WithCancel(context.Background())
	go r.Run(ctx)
	cancel()
	r.Wait()
	if _, n := log.recorded(); n != 3000 {
		t.Fatalf("%d of 3000 queued uses recorded by the time Wait returned", n)
	}
	if got := r.handled.Load(); got != 3000 {
		t.Fatalf("handled %d, want 3000", got)
	}
}
