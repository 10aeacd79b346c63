package projections_test

import (
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/eventstoretest"
	"github.com/sessionledger/ledger/projections"
)

// oldFormatDigest is the state digest of history() (its use on the user's
// subject) as the projection folded it before uses had subjects of their
// own (commit 5bd5e1d): streams written then must fold exactly as before.
const oldFormatDigest = "9023923ab17ea3a4566945bb40bf332589bbc83a89219dd8ceac2cd6e80e82b8"

func TestOldFormatUsesFoldAsBefore(t *testing.T) {
	log, sids := history(t)
	p := open(t, t.TempDir(), log.Ring())
	defer p.Close()
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	if d, _ := p.Digest(); d != oldFormatDigest {
		t.Fatalf("state digest %s, want %s: a stream with uses on the user's subject folds differently", d, oldFormatDigest)
	}
	if s := mustSession(t, p, sids[0]); !s.LastUseAt().Equal(t0.Add(48 * time.Hour)) {
		t.Fatalf("last use %s", s.LastUseAt())
	}
}

// TestUseSubjectTakesStandaloneUsesOnly: a use on the user's use subject
// moves the session's idle deadline and leaves the user's subject where it
// was (its sequence and head, which appends there expect); anything else
// published there is rejected and recorded, and changes nothing.
func TestUseSubjectTakesStandaloneUsesOnly(t *testing.T) {
	log, sids := history(t)
	user, uses := eventstore.UserSubject("u1"), eventstore.UseSubject("u1")
	before := log.Recs[len(log.Recs)-1].Seq
	genuine := log.AddUse(t, domain.SessionUse("u1", sids[0], t0.Add(50*time.Hour)))
	forger := eventstoretest.Key(t, 9)
	forged := log.AddStandalone(t, uses, domain.SessionUse("u1", sids[0], t0.Add(500*time.Hour)), forger)
	// Linked: sealed after the user's head, as a use on the user's subject
	// was; a chain on a use subject would fork between writers.
	linkedUse := domain.SessionUse("u1", sids[0], t0.Add(60*time.Hour))
	linkedUse.ID = "linked"
	if err := linkedUse.Seal(log.Head(user), log.Key); err != nil {
		t.Fatal(err)
	}
	data, _ := linkedUse.Encode()
	linked := log.Raw(uses, data, t0)
	wrongType := log.AddStandalone(t, uses, logout("u1", sids[0], t0.Add(61*time.Hour)), log.Key)
	otherUser := log.AddStandalone(t, uses, domain.SessionUse("u2", sids[0], t0.Add(62*time.Hour)), log.Key)
	garbage := log.Raw(uses, []byte("{not json"), t0)
	// Positive control after the rejections: a genuine use still applies.
	later := log.AddUse(t, domain.SessionUse("u1", sids[0], t0.Add(55*time.Hour)))

	p := open(t, t.TempDir(), log.Ring())
	defer p.Close()
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	if p.Applied() != later.Seq {
		t.Fatalf("applied %d, want %d", p.Applied(), later.Seq)
	}
	s := mustSession(t, p, sids[0])
	if !s.LastUseAt().Equal(t0.Add(55*time.Hour)) || !s.Current(t0.Add(56*time.Hour)).Valid {
		t.Fatalf("session after uses %d and %d: last use %s, %+v", genuine.Seq, later.Seq, s.LastUseAt(), s.Current(t0.Add(56*time.Hour)))
	}
	v, err := p.UserVersion("u1")
	if err != nil || v.Seq != before || v.Head != log.Head(user) || !v.Time.Equal(t0.Add(72*time.Hour)) {
		t.Fatalf("user version %+v %v: a use subject must not move the user's subject (seq %d, head %s)", v, err, before, log.Head(user))
	}
	rejected, total, err := p.Rejected(0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{forged.Seq: projections.RejectSignature, linked.Seq: projections.RejectChain,
		wrongType.Seq: projections.RejectInvalid, otherUser.Seq: projections.RejectInvalid, garbage.Seq: projections.RejectDecode}
	if total != uint64(len(want)) || len(rejected) != len(want) {
		t.Fatalf("rejected %d (%+v), want %d", total, rejected, len(want))
	}
	for _, r := range rejected {
		if want[r.Seq] != r.Reason || r.Detail == "" || r.Subject != uses {
			t.Errorf("rejected %+v, want reason %q on %s", r, want[r.Seq], uses)
		}
	}
	if err := p.Accepted(t.Context(), genuine.Seq); err != nil {
		t.Errorf("genuine use: %v", err)
	}
}

// TestUsesAreIdempotentAndCommute: a signed use replayed (a second copy
// after the dedupe window) changes nothing, and uses folded in any order
// give the same sessions. Uses fold as a maximum, so none needs a chain.
func TestUsesAreIdempotentAndCommute(t *testing.T) {
	base, sids := history(t)
	times := []time.Duration{50 * time.Hour, 53 * time.Hour, 51 * time.Hour}
	build := func(order []int, replay bool) *projections.Projection {
		log, _ := history(t)
		for _, i := range order {
			e := domain.SessionUse("u1", sids[i%2], t0.Add(times[i]))
			e.ID = "use-" + string(rune('a'+i))
			r := log.AddUse(t, e)
			if replay {
				log.Raw(r.Subject, r.Data, r.Stored)
			}
		}
		// A use of the logged-out session after its logout: it must not
		// revive it.
		log.AddUse(t, domain.SessionUse("u1", sids[1], t0.Add(80*time.Hour)))
		p := open(t, t.TempDir(), base.Ring())
		t.Cleanup(func() { p.Close() })
		if err := p.ApplyBatch(log.Recs); err != nil {
			t.Fatal(err)
		}
		if _, total, _ := p.Rejected(0); total != 0 {
			t.Fatalf("order %v, replay %v: %d rejected", order, replay, total)
		}
		return p
	}
	state := func(p *projections.Projection) [2]domain.SessionSnapshot {
		return [2]domain.SessionSnapshot{mustSession(t, p, sids[0]).Snapshot(), mustSession(t, p, sids[1]).Snapshot()}
	}
	want := state(build([]int{0, 1, 2}, false))
	// sids[1] was logged out before any of these uses in the log: a dead
	// token stays dead, whatever time a use carries.
	if !want[0].LastUseAt.Equal(t0.Add(51*time.Hour)) || !want[1].LastUseAt.Equal(t0) {
		t.Fatalf("last uses %s, %s", want[0].LastUseAt, want[1].LastUseAt)
	}
	if want[1].RevokedBy != domain.ReasonRevokedLogout {
		t.Fatalf("logged-out session: %+v", want[1])
	}
	for _, c := range []struct {
		order  []int
		replay bool
	}{{[]int{2, 1, 0}, false}, {[]int{1, 0, 2}, false}, {[]int{0, 1, 2}, true}, {[]int{2, 0, 1}, true}} {
		if got := state(build(c.order, c.replay)); got != want {
			t.Errorf("order %v, replay %v: %+v, want %+v", c.order, c.replay, got, want)
		}
	}
}
