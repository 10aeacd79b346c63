package projections_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/eventstore/eventstoretest"
	"github.com/sessionledger/ledger/projections"
)

// rebuildMix is trustMix followed by what the rebuild's filter of written
// keys must not get wrong: the same session_started under two message ids
// (the same bytes twice, and a second authentic event starting the same
// session), a second claim of a claimed email, a registration of an email
// that belongs to someone, failed logins cleared by a login, an erasure and
// a signup with the freed email. The events of each kind are spread over
// the log so that the batch sizes tried put the two halves of a duplicate
// in one batch and in different ones.
func rebuildMix(t *testing.T) (log *eventstoretest.Log, ring *domain.Keyring, k3 domain.SigningKey) {
	t.Helper()
	log, k1, k2, k3 := trustMix(t)
	at := t0.Add(24 * time.Hour)
	tick := func() time.Time { at = at.Add(time.Second); return at }
	throttle := domain.DefaultLoginThrottle()
	token := byte(100)
	newSID := func() (string, domain.TokenHash) {
		token++
		_, sid, h, err := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{token}, 64)))
		if err != nil {
			t.Fatal(err)
		}
		return sid, h
	}
	type user struct {
		id, email, subject string
		u                  *domain.User
	}
	signup := func(id, email string) *user {
		u := &user{id: id, email: email, subject: eventstore.UserSubject(id), u: domain.NewUser(id, email, "hash", nil)}
		log.Add(t, eventstore.EmailSubject(domain.EmailHash(email)), domain.ClaimEmail(id, email, tick()))
		reg, err := domain.Register(id, email, "", "hash", tick())
		if err != nil {
			t.Fatal(err)
		}
		log.Add(t, u.subject, reg)
		return u
	}
	var users []*user
	for i := range 12 {
		users = append(users, signup(fmt.Sprintf("r%d", i), fmt.Sprintf("r%d@example.com", i)))
	}
	var starts []eventstore.Record // session_started records, to repeat
	var sids []string
	for round := range 3 {
		for i, u := range users {
			for _, e := range u.u.FailLogin(u.email, tick(), throttle) {
				log.Add(t, u.subject, e)
			}
			sid, h := newSID()
			sids = append(sids, sid)
			starts = append(starts, log.Add(t, u.subject, u.u.StartSession(sid, h, "password", true, false, tick(), domain.DefaultPolicy())))
			log.Add(t, u.subject, domain.SessionUse(u.id, sid, tick()))
			// Uses on the use subject too: standalone, one replayed as a
			// second message, one for a session its user never started.
			use := log.AddUse(t, domain.SessionUse(u.id, sid, tick()))
			if i%3 == 0 {
				log.Raw(use.Subject, use.Data, at)
			}
			if i%5 == 0 {
				log.AddUse(t, domain.SessionUse(u.id, "no-such-session-"+sid, tick()))
			}
			switch (i + round) % 4 {
			case 0: // the same bytes again, as a second message
				log.Raw(u.subject, starts[len(starts)-1].Data, at)
			case 1: // a session started by one batch, started again some messages later
				if len(starts) > 5 {
					prev := sids[len(sids)-5]
					owner := users[(i+len(users)-4)%len(users)]
					_, h := newSID()
					log.Add(t, owner.subject, owner.u.StartSession(prev, h, "password", true, false, tick(), domain.DefaultPolicy()))
				}
			case 2: // an email claimed again, and registered by someone else
				other := users[(i+1)%len(users)]
				log.Add(t, eventstore.EmailSubject(domain.EmailHash(other.email)), domain.ClaimEmail(u.id, other.email, tick()))
				reg, err := domain.Register("dup-"+u.id+fmt.Sprint(round), other.email, "", "hash", tick())
				if err != nil {
					t.Fatal(err)
				}
				log.Add(t, eventstore.UserSubject("dup-"+u.id+fmt.Sprint(round)), reg)
			}
		}
		// Replays of session starts of the previous rounds, far behind.
		for _, r := range starts[:len(starts)/3] {
			log.Raw(r.Subject, r.Data, at)
		}
	}
	// A password change that revokes every other session of its user: one
	// event folded into each of the user's hot sessions, then a prune.
	for _, u := range users[:4] {
		sid := sids[len(sids)-len(users)+slices.Index(users, u)]
		payload, err := json.Marshal(domain.PasswordChanged{PasswordHash: "hash2", RevokeOtherSessions: true, BySessionID: sid})
		if err != nil {
			t.Fatal(err)
		}
		log.Add(t, u.subject, domain.Event{Type: domain.EventPasswordChanged, UserID: u.id, SessionID: sid, Time: tick(),
			SchemaVersion: domain.SchemaVersion, Payload: payload})
		sid2, h := newSID()
		log.Add(t, u.subject, u.u.StartSession(sid2, h, "password", true, false, tick(), domain.DefaultPolicy()))
	}
	// An erasure frees the email; a new user signs up with it.
	e, _ := users[3].u.Erase(domain.Principal{}, tick())
	log.Add(t, users[3].subject, e)
	again := signup("r3-again", users[3].email)
	sid, h := newSID()
	log.Add(t, again.subject, again.u.StartSession(sid, h, "password", true, false, tick(), domain.DefaultPolicy()))
	return log, domain.NewKeyring(k1, k2, k3), k3
}

// startStream runs an embedded JetStream server and stores recs in a
// stream, each under its own message id.
func startStream(t *testing.T, recs []eventstore.Record) *eventstore.Reader {
	t.Helper()
	emb, err := embedded.Start(embedded.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REBUILD", Subjects: []string{eventstore.SubjectPrefix + ">"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		m := nats.NewMsg(r.Subject)
		m.Data = r.Data
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("msg-%d", i))
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Sequence != r.Seq {
			t.Fatalf("stored at %d, want %d", ack.Sequence, r.Seq)
		}
	}
	return eventstore.NewReader(stream)
}

// outcomeOf reads what a projection built.
func outcomeOf(t *testing.T, p *projections.Projection, err error) outcome {
	t.Helper()
	var o outcome
	if err != nil {
		o.err = err.Error()
	}
	var derr error
	if o.digest, o.applied, derr = p.DigestAt(); derr != nil {
		t.Fatal(derr)
	}
	if o.rejected, o.total, derr = p.Rejected(0); derr != nil {
		t.Fatal(derr)
	}
	return o
}

func sameOutcome(t *testing.T, what string, got, want outcome) {
	t.Helper()
	if got.digest != want.digest || got.applied != want.applied || got.total != want.total {
		t.Errorf("%s: digest %s applied %d rejected %d; ordinary path: %s %d %d",
			what, got.digest, got.applied, got.total, want.digest, want.applied, want.total)
	}
	if !slices.Equal(got.rejected, want.rejected) {
		t.Errorf("%s: rejections differ:\n%+v\nordinary path:\n%+v", what, got.rejected, want.rejected)
	}
}

// TestRebuildMatchesTheOrdinaryPath: a rebuild (filter of written keys,
// large batches, the read ahead of the apply) builds the same projection as
// applying the messages one at a time, and as CatchUp: the same state
// digest, checkpoint and rejection records, over an adversarial stream with
// duplicates under two message ids, forged messages and key rotations;
// whatever the batch size, and with a filter so small that it answers
// nothing (every read goes to Pebble).
func TestRebuildMatchesTheOrdinaryPath(t *testing.T) {
	defer projections.SetCheckWorkers(4)()
	log, ring, _ := rebuildMix(t)
	recs := log.Recs
	one := applyInBatches(t, recs, ring, 1)
	if one.err != "" || one.applied != uint64(len(recs)) {
		t.Fatalf("one at a time: applied %d of %d, err %q", one.applied, len(recs), one.err)
	}
	reasons := map[string]int{}
	for _, r := range one.rejected {
		reasons[r.Reason]++
	}
	t.Logf("%d messages, rejected %d %v", len(recs), one.total, reasons)
	store := startStream(t, recs)
	ctx := context.Background()

	p := open(t, t.TempDir(), ring)
	sameOutcome(t, "CatchUp", outcomeOf(t, p, p.CatchUp(ctx, store, nil)), one)
	p.Close()

	for _, c := range []struct {
		batch   int
		bits    uint64
		options bool // ForRebuild's Pebble options, as ledger rebuild opens it
		cache   int  // the rebuild cache's budget in bytes (0: the usual)
	}{{1, 0, false, 0}, {7, 0, true, 0}, {100, 0, false, 0}, {len(recs), 0, true, 0}, {8192, 0, true, 0}, {33, 64, false, 0},
		// A cache so small that each generation holds an entry or two:
		// most reads miss it, and entries are dropped all the time.
		{7, 0, false, 400}, {100, 0, true, 4000}, {33, 64, false, 400}} {
		t.Run(fmt.Sprintf("batch %d bits %d options %v cache %d", c.batch, c.bits, c.options, c.cache), func(t *testing.T) {
			defer projections.SetRebuild(c.batch, c.bits)()
			if c.cache > 0 {
				defer projections.SetRebuildCache(c.cache)()
			}
			dir := t.TempDir()
			var opts []projections.Option
			if c.options {
				opts = append(opts, projections.ForRebuild(), projections.WithBlockCache(1<<20))
			}
			p, err := projections.Open(dir, ring, nil, nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			before, hitsBefore := projections.FilterAnswered(), projections.CacheHits()
			var calls int
			err = p.Rebuild(ctx, store, func(applied, target uint64) {
				calls++
				if target != uint64(len(recs)) {
					t.Errorf("progress: target %d, want %d", target, len(recs))
				}
			})
			answered, hits := projections.FilterAnswered()-before, projections.CacheHits()-hitsBefore
			sameOutcome(t, "rebuild", outcomeOf(t, p, err), one)
			if calls == 0 {
				t.Error("no progress reported")
			}
			if c.bits == 0 && answered == 0 {
				t.Error("the filter answered no read")
			}
			if hits == 0 {
				t.Error("the cache answered no read")
			}
			t.Logf("filter answered %d reads, cache %d", answered, hits)
			if c.bits == 64 && answered > 0 {
				t.Logf("a saturated filter still answered %d reads", answered)
			}
			// Reopened, it is complete and serves as any other.
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			p = open(t, dir, ring)
			sameOutcome(t, "reopened", outcomeOf(t, p, nil), one)
			p.Close()
		})
	}
}

// TestStoppedRebuildCanBeCaughtUp: a rebuild that returns before the end
// (here: blocked at a key this instance does not hold) leaves a projection
// up to its checkpoint, which CatchUp finishes once the key is there, with
// the same result as the ordinary path; and a rebuild refuses a projection
// that is not empty.
func TestStoppedRebuildCanBeCaughtUp(t *testing.T) {
	log, ring, k3 := rebuildMix(t)
	store := startStream(t, log.Recs)
	ctx := context.Background()
	dir := t.TempDir()
	noK3 := domain.NewKeyring(slices.DeleteFunc(ring.Keys(), func(k domain.SigningKey) bool { return k.ID() == k3.ID() })...)
	p, err := projections.Open(dir, noK3, nil, nil, projections.ForRebuild())
	if err != nil {
		t.Fatal(err)
	}
	err = p.Rebuild(ctx, store, nil)
	if !errors.Is(err, projections.ErrBlocked) {
		t.Fatalf("rebuild without the third key: %v", err)
	}
	blocked := applyInBatches(t, log.Recs, noK3, 1)
	got := outcomeOf(t, p, nil)
	got.err = blocked.err
	sameOutcome(t, "stopped rebuild", got, blocked)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = open(t, dir, ring)
	defer p.Close()
	sameOutcome(t, "caught up after the rebuild stopped", outcomeOf(t, p, p.CatchUp(ctx, store, nil)), applyInBatches(t, log.Recs, ring, 1))

	// A projection with something in it is not rebuilt into.
	q := open(t, t.TempDir(), ring)
	defer q.Close()
	if err := q.ApplyBatch(log.Recs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := q.Rebuild(ctx, store, nil); err == nil {
		t.Fatal("rebuild into a projection that is not empty")
	}
}

// TestRebuildSurvivesACrash: without a write-ahead log (ForRebuild), what a
// crash keeps of a rebuild is what was flushed, and perhaps some of what
// was written and not synced. A crash in the middle leaves a projection
// Open refuses (or, if nothing was kept, an empty one); a crash right
// after Rebuild returned keeps the whole projection.
func TestRebuildSurvivesACrash(t *testing.T) {
	log, ring, _ := rebuildMix(t)
	store := startStream(t, log.Recs)
	ctx := context.Background()
	want := applyInBatches(t, log.Recs, ring, 1)
	for _, c := range []struct {
		name     string
		middle   bool // the crash happens half way, else once Rebuild returned
		unsynced int  // percent of what was not synced that the crash keeps
	}{{"in the middle", true, 0}, {"in the middle, some unsynced writes kept", true, 50}, {"after", false, 0}, {"after, some unsynced writes kept", false, 50}} {
		t.Run(c.name, func(t *testing.T) {
			defer projections.SetRebuild(16, 0)()
			fs := vfs.NewCrashableMem()
			opts := []projections.Option{projections.ForRebuild(), func(o *pebble.Options) {
				o.FS = fs
				o.MemTableSize = 64 << 10 // flushes every few batches
			}}
			p, err := projections.Open("proj", ring, nil, nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			var crashed *vfs.MemFS
			err = p.Rebuild(ctx, store, func(applied, target uint64) {
				if c.middle && crashed == nil && applied >= target/2 {
					crashed = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: c.unsynced, RNG: rng})
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if !c.middle {
				crashed = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: c.unsynced, RNG: rng})
			}
			p.Close()
			p, err = projections.Open("proj", ring, nil, nil, func(o *pebble.Options) { o.FS = crashed })
			if c.middle {
				switch {
				case errors.Is(err, projections.ErrInterruptedRebuild):
				case err == nil && p.Applied() == 0:
					t.Log("the crash kept nothing")
					p.Close()
				case err == nil:
					p.Close()
					t.Fatalf("a crash half way through the rebuild left a projection at %d of %d that opens", p.Applied(), len(log.Recs))
				default:
					t.Fatal(err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			sameOutcome(t, "after the crash", outcomeOf(t, p, nil), want)
		})
	}
}
