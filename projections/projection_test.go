package projections_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/projections"
)

var t0 = time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)

// history builds the stored records of one user: registration, two
// sessions, a use and a logout of the first, each sealed into the chain.
func history(t *testing.T) (recs []eventstore.Record, sids []string) {
	t.Helper()
	subject := eventstore.UserSubject("u1")
	u := domain.NewUser("u1", "a@example.com", "hash", nil)
	reg, err := domain.Register("u1", "a@example.com", "hash", t0)
	if err != nil {
		t.Fatal(err)
	}
	events := []domain.Event{reg}
	for i := range 2 {
		_, sid, h, err := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{byte(i + 1)}, 64)))
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, sid)
		events = append(events, u.StartSession(sid, h, "password", true, false, t0, domain.DefaultPolicy()))
	}
	events = append(events, domain.SessionUse("u1", sids[0], t0.Add(48*time.Hour)))
	events = append(events, domain.Event{Type: domain.EventSessionLoggedOut, UserID: "u1", SessionID: sids[1],
		Time: t0.Add(72 * time.Hour), SchemaVersion: domain.SchemaVersion, Payload: []byte(`{}`)})
	head := ""
	for i, e := range events {
		e.ID = "ev" + string(rune('a'+i))
		if err := e.Seal(head); err != nil {
			t.Fatal(err)
		}
		head = e.Hash
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventstore.Record{Seq: uint64(i + 1), Subject: subject, Data: data})
	}
	return recs, sids
}

func TestApplyIsIdempotentAndResumable(t *testing.T) {
	dir := t.TempDir()
	recs, sids := history(t)
	p, err := projections.Open(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ApplyBatch(recs[:3]); err != nil {
		t.Fatal(err)
	}
	// Redelivery of everything, overlapping what was applied.
	if err := p.ApplyBatch(recs); err != nil {
		t.Fatal(err)
	}
	once, applied, err := p.DigestAt()
	if err != nil || applied != 5 {
		t.Fatalf("digest %v at %d", err, applied)
	}
	if err := p.ApplyBatch(recs); err != nil {
		t.Fatal(err)
	}
	if twice, _ := p.Digest(); twice != once {
		t.Fatal("re-applying applied records changed the projection")
	}
	s, err := p.Session(sids[0])
	if err != nil {
		t.Fatal(err)
	}
	if !s.LastUseAt().Equal(t0.Add(48 * time.Hour)) {
		t.Errorf("last use %s", s.LastUseAt())
	}
	if v := mustSession(t, p, sids[1]).Verdict(t0.Add(73 * time.Hour)); v.Reason != domain.ReasonRevokedLogout {
		t.Errorf("logged-out session: %+v", v)
	}
	u, version, err := p.LoadUser("u1")
	if err != nil || u == nil || version.Seq != 5 || version.Head == "" {
		t.Fatalf("LoadUser = %v %+v %v", u, version, err)
	}
	if uid, hash, err := p.Credentials("a@example.com"); err != nil || uid != "u1" || hash != "hash" {
		t.Fatalf("Credentials = %q %q %v", uid, hash, err)
	}
	if _, _, err := p.Credentials("b@example.com"); !errors.Is(err, domain.ErrUserNotFound) {
		t.Fatalf("unknown email: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened, it resumes at its checkpoint with the same state.
	p, err = projections.Open(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Applied() != 5 {
		t.Fatalf("checkpoint after reopen = %d", p.Applied())
	}
	if again, _ := p.Digest(); again != once {
		t.Fatal("state changed across close and reopen")
	}

	// A rebuild into a fresh dir from the same records matches exactly.
	q, err := projections.Open(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, r := range recs {
		if err := q.ApplyBatch([]eventstore.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if one, _ := q.Digest(); one != once {
		t.Fatal("applying one by one differs from applying in batches")
	}
}

func TestCorruptMessageIsRecordedAndSkipped(t *testing.T) {
	recs, sids := history(t)
	p, err := projections.Open(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	bad := eventstore.Record{Seq: 6, Subject: recs[0].Subject, Data: []byte("{not json")}
	after := recs[3]
	after.Seq = 7 // another use, after the bad one
	if err := p.ApplyBatch(append(append(recs, bad), after)); err != nil {
		t.Fatal(err)
	}
	if p.Applied() != 7 {
		t.Fatalf("applied %d, want 7", p.Applied())
	}
	skipped, err := p.Skipped()
	if err != nil || len(skipped) != 1 || skipped[6] == "" {
		t.Fatalf("skipped = %v %v", skipped, err)
	}
	if _, err := p.Session(sids[0]); err != nil {
		t.Fatal(err)
	}
}

func mustSession(t *testing.T, p *projections.Projection, id string) *domain.Session {
	t.Helper()
	s, err := p.Session(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTimesBeyond2262 guards against storing times as UnixNano, which
// overflows in April 2262.
func TestTimesBeyond2262(t *testing.T) {
	p, err := projections.Open(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	far := time.Date(2300, 1, 2, 3, 4, 5, 6, time.UTC)
	u := domain.NewUser("u9", "far@example.com", "hash", nil)
	_, sid, h, _ := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
	e := u.StartSession(sid, h, "password", true, false, far, domain.DefaultPolicy())
	e.ID = "far"
	if err := e.Seal(""); err != nil {
		t.Fatal(err)
	}
	data, _ := e.Encode()
	if err := p.ApplyBatch([]eventstore.Record{{Seq: 1, Subject: eventstore.UserSubject("u9"), Data: data}}); err != nil {
		t.Fatal(err)
	}
	s := mustSession(t, p, sid)
	if !s.StartedAt().Equal(far) || !s.Verdict(far.Add(time.Hour)).Valid {
		t.Fatalf("started %s, verdict %+v", s.StartedAt(), s.Verdict(far.Add(time.Hour)))
	}
}

// TestCachedSessionsNeverGoStale: readers hammer a session while batches
// update it; once ApplyBatch has returned, no read may show older state.
func TestCachedSessionsNeverGoStale(t *testing.T) {
	recs, sids := history(t)
	p, err := projections.Open(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ApplyBatch(recs); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
					_, _ = p.Session(sids[0])
				}
			}
		}()
	}
	head, _ := domain.DecodeEvent(recs[len(recs)-1].Data)
	prev := head.Hash
	seq := uint64(len(recs))
	for i := 1; i <= 300; i++ {
		at := t0.Add(48*time.Hour + time.Duration(i)*time.Minute)
		e := domain.SessionUse("u1", sids[0], at)
		e.ID = "use" + string(rune(i))
		if err := e.Seal(prev); err != nil {
			t.Fatal(err)
		}
		prev = e.Hash
		data, _ := e.Encode()
		seq++
		if err := p.ApplyBatch([]eventstore.Record{{Seq: seq, Subject: recs[0].Subject, Data: data}}); err != nil {
			t.Fatal(err)
		}
		if got := mustSession(t, p, sids[0]).LastUseAt(); !got.Equal(at) {
			close(stop)
			t.Fatalf("after applying use %d at %s, read last use %s", i, at, got)
		}
	}
	close(stop)
	for range 4 {
		<-done
	}
}
