package projections

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

type fakeStream struct {
	mu   sync.Mutex
	last uint64
	err  error
}

func (s *fakeStream) LastSeq(context.Context) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.err
}

func (s *fakeStream) set(last uint64, err error) {
	s.mu.Lock()
	s.last, s.err = last, err
	s.mu.Unlock()
}

// TestFreshnessFailsClosed walks the tracker through its states with a
// fake wall clock and a fake stream.
func TestFreshnessFailsClosed(t *testing.T) {
	p, err := Open(t.TempDir(), domain.NewKeyring(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stream := &fakeStream{}
	f := NewFreshness(p, FreshnessConfig{LastSeq: stream.LastSeq, MaxLag: 5 * time.Second, MinSeqWait: 10 * time.Millisecond, Now: func() time.Time { return now }})
	ctx := context.Background()

	var be *BehindError
	if err := f.Check(); !errors.Is(err, ErrProjectionBehind) || !errors.As(err, &be) || !be.Never {
		t.Fatalf("before any probe: %v", err)
	}
	if err := f.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(); err != nil {
		t.Fatalf("empty stream, empty projection: %v", err)
	}
	now = now.Add(5 * time.Second)
	if err := f.Check(); err != nil {
		t.Fatalf("at exactly max-lag: %v", err)
	}
	now = now.Add(time.Millisecond)
	if err := f.Check(); !errors.Is(err, ErrProjectionBehind) {
		t.Fatalf("past max-lag without a probe: %v", err)
	}

	// The stream is unreachable: probes fail, freshness does not move.
	stream.set(0, errors.New("nats: no servers available"))
	if err := f.Probe(ctx); err == nil {
		t.Fatal("probe of an unreachable stream succeeded")
	}
	if err := f.Check(); !errors.Is(err, ErrProjectionBehind) {
		t.Fatalf("stream unreachable: %v", err)
	}

	// The stream has 3 messages the projection lacks: a probe at t0 does
	// not make the instance fresh until they are applied, and then it is
	// fresh as of t0, not as of the moment they were applied.
	stream.set(3, nil)
	t0 := now
	if err := f.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(); !errors.Is(err, ErrProjectionBehind) {
		t.Fatalf("behind the stream: %v", err)
	}
	if got := f.Status().LagEvents; got != 3 {
		t.Errorf("lag_events = %v, want 3", got)
	}
	if err := f.WaitApplied(ctx, 3); !errors.Is(err, ErrProjectionBehind) || !errors.As(err, &be) || be.Want != 3 {
		t.Fatalf("wait for an unapplied seq: %v", err)
	}
	now = now.Add(2 * time.Second)
	recs := []eventstore.Record{{Seq: 1, Data: []byte("x")}, {Seq: 2, Data: []byte("x")}, {Seq: 3, Data: []byte("x")}}
	if err := p.ApplyBatch(recs); err != nil {
		t.Fatal(err)
	}
	f.promote()
	if got := f.FreshAsOf(); !got.Equal(t0) {
		t.Fatalf("fresh as of %s, want the probe time %s", got, t0)
	}
	if err := f.Await(ctx, 3); err != nil {
		t.Fatalf("caught up: %v", err)
	}
	now = t0.Add(5*time.Second + time.Millisecond)
	if err := f.Await(ctx, 0); !errors.Is(err, ErrProjectionBehind) {
		t.Fatalf("freshness is measured from the probe: %v", err)
	}
}

// TestInLog: a sequence the last poll saw needs no request; one beyond it
// is checked against the stream now; only one beyond the stream's end is
// refused, and an unreachable stream refuses nothing (the wait decides).
func TestInLog(t *testing.T) {
	p, err := Open(t.TempDir(), domain.NewKeyring(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stream := &fakeStream{}
	f := NewFreshness(p, FreshnessConfig{LastSeq: stream.LastSeq})
	ctx := context.Background()
	stream.set(10, nil)
	if err := f.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	stream.set(12, nil) // a write on another instance since the poll
	if err := f.InLog(ctx, 12); err != nil {
		t.Fatalf("seq written after the last poll: %v", err)
	}
	if err := f.InLog(ctx, 13); !errors.Is(err, ErrBeyondLog) {
		t.Fatalf("seq beyond the stream: %v, want ErrBeyondLog", err)
	}
	stream.set(0, errors.New("nats down"))
	if err := f.InLog(ctx, 10); err != nil {
		t.Fatalf("seq the last poll saw, stream down: %v", err)
	}
	if err := f.InLog(ctx, 99); err != nil {
		t.Fatalf("stream down: %v, want no refusal", err)
	}
}
