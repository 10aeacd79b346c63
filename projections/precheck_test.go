package projections_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/eventstoretest"
	"github.com/sessionledger/ledger/projections"
)

// trustMix builds a log of a few hundred messages in which legitimate
// events are interleaved with every kind of message the projection must
// reject, across two key rotations: forged signatures, MACs that do not
// match, an unsigned event, content that no longer matches its hash,
// events linked to the wrong head, replays, undecodable bytes, events
// signed by a key held here before it is in force and after it is retired,
// a second introduction, a forged rotation, and authentic events the rules
// refuse. The third key is k3: a ring without it blocks at the second
// rotation.
func trustMix(t *testing.T) (log *eventstoretest.Log, k1, k2, k3 domain.SigningKey) {
	t.Helper()
	k1, k2, k3 = eventstoretest.Key(t, 1), eventstoretest.Key(t, 2), eventstoretest.Key(t, 3)
	forger := eventstoretest.Key(t, 9)
	log = eventstoretest.NewLog(t, k1, t0)
	at := t0
	tick := func() time.Time { at = at.Add(time.Second); return at }
	// sealed seals e after prev with k and appends it as is: the log's
	// heads do not move, as the projection's must not.
	sealed := func(subject string, e domain.Event, prev string, k domain.SigningKey, tamper func(*domain.Event)) {
		if e.ID == "" {
			e.ID = fmt.Sprintf("raw-%d", len(log.Recs)+1)
		}
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
		log.Raw(subject, data, e.Time)
	}
	// nonCanonical stores e in a layout of its own (a space after the
	// opening brace: any JSON reader decodes it to the same event), with
	// a hash of those bytes, so that the stored bytes hash to the hash
	// they carry (domain.StoredHashMatches) while the event's canonical
	// bytes do not (CheckHash). Its MAC is the one Seal made with k over
	// the canonical hash: it matches nothing here. Such an event must be
	// rejected for its hash, as CheckHash alone would: a hash of the
	// stored bytes counts only under a MAC that matches (precheck.go).
	nonCanonical := func(subject string, e domain.Event, prev string, k domain.SigningKey) {
		e.ID = fmt.Sprintf("noncanonical-%d", len(log.Recs)+1)
		if err := e.Seal(prev, k); err != nil {
			t.Fatal(err)
		}
		canon, err := e.CanonicalBytes()
		if err != nil {
			t.Fatal(err)
		}
		body := append([]byte("{ "), canon[1:]...)
		sum := sha256.Sum256(body)
		e.Hash = "sha256:" + hex.EncodeToString(sum[:])
		data := fmt.Appendf(body[:len(body)-1:len(body)-1], `,"hash":%q,"mac":%q,"sig":%q}`, e.Hash, e.MAC, e.Sig)
		if d, err := domain.DecodeEvent(data); err != nil || !d.StoredHashMatches(data) || d.CheckHash() == nil {
			t.Fatalf("the non-canonical event is not what this test needs: %v", err)
		}
		log.Raw(subject, data, e.Time)
	}
	type user struct {
		id, subject string
		u           *domain.User
		sids        []string
	}
	var users []*user
	for i := range 6 {
		u := &user{id: fmt.Sprintf("u%d", i), subject: eventstore.UserSubject(fmt.Sprintf("u%d", i))}
		email := fmt.Sprintf("u%d@example.com", i)
		u.u = domain.NewUser(u.id, email, "hash", nil)
		reg, err := domain.Register(u.id, email, "", "hash", tick())
		if err != nil {
			t.Fatal(err)
		}
		log.Add(t, u.subject, reg)
		users = append(users, u)
	}
	token := byte(0)
	start := func(u *user) {
		token++
		_, sid, h, err := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{token}, 64)))
		if err != nil {
			t.Fatal(err)
		}
		u.sids = append(u.sids, sid)
		log.Add(t, u.subject, u.u.StartSession(sid, h, "password", true, false, tick(), domain.DefaultPolicy()))
	}
	round := func(phase int) {
		for i, u := range users {
			start(u)
			sid := u.sids[len(u.sids)-1]
			log.Add(t, u.subject, domain.SessionUse(u.id, sid, tick()))
			switch (i + phase) % 11 {
			case 0: // a forged logout: chained and hashed, signed by a stranger
				log.AddSigned(t, u.subject, logout(u.id, sid, tick()), forger)
			case 1: // the ledger's key id, but a MAC that does not match
				sealed(u.subject, logout(u.id, sid, tick()), log.Head(u.subject), log.Key, func(e *domain.Event) {
					first := "A"
					if e.MAC[0] == 'A' {
						first = "B"
					}
					e.MAC = first + e.MAC[1:]
				})
			case 2: // no MAC at all
				sealed(u.subject, logout(u.id, sid, tick()), log.Head(u.subject), log.Key, func(e *domain.Event) { e.MAC = "" })
			case 3: // content changed after sealing
				sealed(u.subject, logout(u.id, sid, tick()), log.Head(u.subject), log.Key, func(e *domain.Event) { e.Time = e.Time.Add(time.Hour) })
				// stored in another layout with a hash of those bytes,
				// under the ledger's key id and under a stranger's
				nonCanonical(u.subject, logout(u.id, sid, tick()), log.Head(u.subject), log.Key)
				nonCanonical(u.subject, logout(u.id, sid, tick()), log.Head(u.subject), forger)
			case 4: // authentic, but linked to another head
				sealed(u.subject, logout(u.id, sid, tick()), "sha256:0000", log.Key, nil)
			case 5: // a genuine message replayed
				log.Raw(u.subject, log.Recs[len(log.Recs)-2].Data, at)
			case 6: // not an event
				log.Raw(u.subject, []byte("{not json"), at)
				log.Raw(u.subject, []byte(`{"type":"no_such_event","event_id":"x","time":"2026-05-01T08:00:00Z","schema_version":2}`), at)
			case 7: // authentic, refused by the rules: a session that does not exist
				log.Add(t, u.subject, domain.SessionUse(u.id, "no-such-session", tick()))
			case 8: // held here, MAC right, but not the key in force
				if log.Key.ID() != k2.ID() {
					log.AddSigned(t, u.subject, logout(u.id, sid, tick()), k2)
				} else {
					log.AddSigned(t, u.subject, logout(u.id, sid, tick()), k1) // retired
				}
			case 9: // a second introduction, and a forged rotation
				sealed(eventstore.KeysSubject, domain.IntroduceKey(log.Key, tick()), log.Head(eventstore.KeysSubject), log.Key, nil)
				sealed(eventstore.KeysSubject, domain.RotateKey(log.Key.ID(), forger, tick()), log.Head(eventstore.KeysSubject), forger, nil)
			default: // a legitimate logout
				log.Add(t, u.subject, logout(u.id, u.sids[0], tick()))
			}
		}
	}
	for phase := range 8 {
		round(phase)
	}
	log.Rotate(t, k2, tick())
	for phase := 8; phase < 16; phase++ {
		round(phase)
	}
	log.Rotate(t, k3, tick())
	for phase := 16; phase < 20; phase++ {
		round(phase)
	}
	return log, k1, k2, k3
}

type outcome struct {
	digest   string
	applied  uint64
	rejected []projections.Rejected
	total    uint64
	err      string // the error ApplyBatch stopped with, if any
}

// applyInBatches applies recs in batches of n (delivering what follows a
// failed batch again, as the live handler and CatchUp do) and reports the
// projection it built.
func applyInBatches(t *testing.T, recs []eventstore.Record, ring *domain.Keyring, n int) outcome {
	t.Helper()
	p := open(t, t.TempDir(), ring)
	defer p.Close()
	var o outcome
	for i := 0; i < len(recs); i += n {
		if err := p.ApplyBatch(recs[i:min(i+n, len(recs))]); err != nil {
			o.err = err.Error()
			break
		}
	}
	var err error
	if o.digest, o.applied, err = p.DigestAt(); err != nil {
		t.Fatal(err)
	}
	if o.rejected, o.total, err = p.Rejected(0); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestChecksAheadGiveTheSameVerdicts: a large batch decodes, hashes and
// checks MACs ahead on several workers; one message at a time does it
// inline. The verdicts, rejection records, key chain, checkpoint and state
// must be the same either way, whatever the batch boundaries, including a
// batch that blocks at a key this instance does not hold.
func TestChecksAheadGiveTheSameVerdicts(t *testing.T) {
	defer projections.SetCheckWorkers(4)()
	log, k1, k2, k3 := trustMix(t)
	recs := log.Recs
	for _, ring := range []struct {
		name  string
		ring  *domain.Keyring
		block bool
	}{{"all keys", domain.NewKeyring(k1, k2, k3), false}, {"third key not held", domain.NewKeyring(k1, k2), true}} {
		t.Run(ring.name, func(t *testing.T) {
			before := projections.PipelinesStarted()
			one := applyInBatches(t, recs, ring.ring, 1)
			if projections.PipelinesStarted() != before {
				t.Fatal("single-message batches started a worker pool")
			}
			reasons := map[string]int{}
			for _, r := range one.rejected {
				reasons[r.Reason]++
			}
			for _, want := range []string{projections.RejectDecode, projections.RejectHash, projections.RejectSignature, projections.RejectChain, projections.RejectInvalid} {
				if reasons[want] == 0 {
					t.Errorf("no rejection for %q in the mix: %v", want, reasons)
				}
			}
			for _, want := range []string{"MAC does not match", "is in force", "unsigned", "already introduced", "links to", "hash does not match"} {
				if !slices.ContainsFunc(one.rejected, func(r projections.Rejected) bool { return strings.Contains(r.Detail, want) }) {
					t.Errorf("no rejection saying %q in the mix", want)
				}
			}
			nonCanonical := 0
			for _, r := range one.rejected {
				if strings.HasPrefix(r.EventID, "noncanonical-") {
					nonCanonical++
					if r.Reason != projections.RejectHash {
						t.Errorf("seq %d, stored in a non-canonical layout with a hash of its own and no matching MAC, rejected as %q (%s), want %q", r.Seq, r.Reason, r.Detail, projections.RejectHash)
					}
				}
			}
			if nonCanonical == 0 {
				t.Error("no non-canonical event in the mix was rejected")
			}
			if ring.block != (one.err != "") || (!ring.block && one.applied != uint64(len(recs))) {
				t.Fatalf("one at a time: applied %d of %d, err %q", one.applied, len(recs), one.err)
			}
			t.Logf("%d messages, applied %d, rejected %d %v, err %q", len(recs), one.applied, one.total, reasons, one.err)
			for _, n := range []int{7, 8, 33, 100, 257, len(recs)} {
				before := projections.PipelinesStarted()
				got := applyInBatches(t, recs, ring.ring, n)
				if n >= 8 && projections.PipelinesStarted() == before {
					t.Errorf("batches of %d were not checked ahead", n)
				}
				if got.digest != one.digest || got.applied != one.applied || got.total != one.total || got.err != one.err {
					t.Errorf("batches of %d: digest %s applied %d rejected %d err %q; one at a time: %s %d %d %q",
						n, got.digest, got.applied, got.total, got.err, one.digest, one.applied, one.total, one.err)
				}
				if !slices.Equal(got.rejected, one.rejected) {
					t.Errorf("batches of %d: rejections differ:\n%+v\none at a time:\n%+v", n, got.rejected, one.rejected)
				}
			}
		})
	}
}
