package projections_test

import (
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// TestRevocationsPageInLogOrder: the feed's index holds one entry per
// revoked session, ordered by sequence then session, and paging by
// (seq, session) neither skips nor repeats one.
func TestRevocationsPageInLogOrder(t *testing.T) {
	l := newUserLog(t)
	p := domain.DefaultPolicy()
	a, b, c := l.start(t, t0, p), l.start(t, t0.Add(time.Second), p), l.start(t, t0.Add(2*time.Second), p)
	l.add(t, domain.Event{Type: domain.EventOtherSessionsRevoked, UserID: "u1", SessionID: a, Time: t0.Add(time.Minute),
		SchemaVersion: domain.SchemaVersion, Payload: []byte(`{"kept_session_id":"` + a + `"}`)})
	l.add(t, logout("u1", a, t0.Add(2*time.Minute)))
	proj := open(t, t.TempDir(), l.Ring())
	defer proj.Close()
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	all, err := proj.Revocations(0, "", 100)
	if err != nil || len(all) != 3 {
		t.Fatalf("%d revocations (%v), want 3", len(all), err)
	}
	if all[0].Seq != all[1].Seq || all[2].Seq <= all[1].Seq || all[2].SessionID != a || all[2].Reason != "revoked:logout" || all[0].Reason != "revoked:revoke_others" {
		t.Fatalf("revocations %+v", all)
	}
	if got := map[string]bool{all[0].SessionID: true, all[1].SessionID: true}; !got[b] || !got[c] {
		t.Fatalf("logout-others revoked %+v, want %s and %s", all[:2], b, c)
	}
	var paged []string
	seq, session := uint64(0), ""
	for {
		page, err := proj.Revocations(seq, session, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page[0].SessionID)
		seq, session = page[0].Seq, page[0].SessionID
	}
	if len(paged) != 3 || paged[0] != all[0].SessionID || paged[1] != all[1].SessionID || paged[2] != a {
		t.Fatalf("paged one at a time: %v, want %v", paged, all)
	}
	if rest, _ := proj.Revocations(all[0].Seq, "", 10); len(rest) != 1 || rest[0].SessionID != a {
		t.Fatalf("after the whole sequence %d: %+v, want the logout only", all[0].Seq, rest)
	}
}
