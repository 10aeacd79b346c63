package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/handlers/ports"
)

const appendWorkers = 4

// appendSlice is the length of one interleaved append slice.
func (r *runner) appendSlice() time.Duration {
	if r.s.quick {
		return r.s.appendDur / 2
	}
	return time.Second
}

// appendBench compares eventstore.Store with raw JetStream publishes on one
// embedded server: Append at a version (the logout path) against Publish
// with WithExpectLastSequencePerSubject, with fsync per message (the
// server's default) and without; and AppendFacts (the uses path) against
// the same raw publish from one writer.
func (r *runner) appendBench(ctx context.Context) error {
	for _, syncAlways := range []bool{true, false} {
		if err := r.appendMode(ctx, syncAlways); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) appendMode(ctx context.Context, syncAlways bool) error {
	name := "sync"
	if !syncAlways {
		name = "nosync"
	}
	// A new ledger, as `ledger serve` starts one: a signing key, the
	// server's nkey identities, the key introduced first. Both sides
	// connect as the writer.
	dir := filepath.Join(r.work, "append-"+name)
	keyPath := filepath.Join(dir, signingKeyFile)
	if _, err := keyfile.Create(keyPath); err != nil {
		return err
	}
	_, key, err := loadKey(keyPath)
	if err != nil {
		return err
	}
	emb, nc1, err := startNATS(filepath.Join(dir, "nats"), "bench-append", syncAlways)
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	defer nc1.Close()
	store, err := eventstore.Open(ctx, nc1, eventstore.Config{Create: true, Keys: staticKey{key}})
	if err != nil {
		return err
	}
	store.SetTrust(staticKey{key}, streamVersions{store.Stream()})
	if _, err := store.Introduce(ctx, key, newID(), time.Now().Add(-2*time.Hour)); err != nil {
		return fmt.Errorf("introduce signing key: %w", err)
	}
	nc2, err := emb.Connect("bench-raw")
	if err != nil {
		return err
	}
	defer nc2.Close()
	js, err := jetstream.New(nc2)
	if err != nil {
		return err
	}

	// One user with one live session per worker; its events alternate
	// three uses and a logout, as the API would append them.
	type lane struct {
		subject string
		version eventstore.Version // Store lanes
		seq     uint64             // raw lanes
		events  []domain.Event
		raw     [][]byte
	}
	newLane := func() (*lane, error) {
		uid := newID()
		_, sid, hash, err := domain.NewToken(rand.Reader)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		start := domain.NewUser(uid, "", "", nil).StartSession(sid, hash, "password", true, false, now.Add(-time.Hour), domain.DefaultPolicy())
		sess, err := domain.SessionFromEvent(start)
		if err != nil {
			return nil, err
		}
		logout, err := domain.NewUser(uid, "", "", []*domain.Session{sess}).Logout(sid, now)
		if err != nil {
			return nil, err
		}
		use := domain.SessionUse(uid, sid, now)
		l := &lane{subject: eventstore.UserSubject(uid), events: []domain.Event{use, use, use, logout}}
		// The raw loop publishes the same bytes the store would: sealed and
		// signed events (hash, key id, MAC and signature add about 330
		// bytes to each).
		head := ""
		for _, e := range l.events {
			e.ID = newID()
			if err := e.Seal(head, key); err != nil {
				return nil, err
			}
			head = e.Hash
			b, err := e.Encode()
			if err != nil {
				return nil, err
			}
			l.raw = append(l.raw, b)
		}
		return l, nil
	}
	lanes := func() ([]*lane, error) {
		out := make([]*lane, appendWorkers)
		for i := range out {
			l, err := newLane()
			if err != nil {
				return nil, err
			}
			out[i] = l
		}
		return out, nil
	}
	storeLanes, err := lanes()
	if err != nil {
		return err
	}
	rawLanes, err := lanes()
	if err != nil {
		return err
	}
	appendStore := func(l *lane, k int) error {
		e := l.events[k%len(l.events)]
		e.ID = newID()
		v, err := store.Append(ctx, l.subject, l.version, e)
		l.version = v
		return err
	}
	appendRaw := func(l *lane, k int) error {
		ack, err := js.Publish(ctx, l.subject, l.raw[k%len(l.raw)], jetstream.WithExpectLastSequencePerSubject(l.seq))
		if err != nil {
			return err
		}
		l.seq = ack.Sequence
		return nil
	}
	runLanes := func(ls []*lane, fn func(*lane, int) error, dur time.Duration) (float64, time.Duration, error) {
		n, el, err := laneLoop(ctx, len(ls), dur, func(w, k int) error { return fn(ls[w], k) })
		return float64(n), el, err
	}
	pr, err := interleave(r.s.appendDur, r.appendSlice(),
		func(d time.Duration) (float64, time.Duration, error) { return runLanes(rawLanes, appendRaw, d) },
		func(d time.Duration) (float64, time.Duration, error) { return runLanes(storeLanes, appendStore, d) })
	if err != nil {
		return fmt.Errorf("append (%s): %w", name, err)
	}
	id, label := "append_rate", "fsync per message"
	if !syncAlways {
		id, label = "append_rate_nosync", "no fsync"
	}
	f := ratioFigure(id, fmt.Sprintf("append rate, Store.Append at version (%d writers, %s)", appendWorkers, label), "events/s",
		pr.rateB(), pr.rateA(), "js.Publish+ExpectLastSeqPerSubject", 0.7)
	f.Note = pr.note()
	r.add(withDetail(withDetail(f, pr.detail()), map[string]any{"store_events": pr.opsB, "raw_events": pr.opsA, "writers": appendWorkers}))

	if !syncAlways {
		return nil
	}
	// Uses: the use recorder hands batches of facts to AppendFacts, which
	// links each to its subject's head. The recorder gives each fact its
	// subject's version from the projection (Publication.At); the bench has
	// no projection, so AppendFacts asks streamVersions, once per subject
	// and batch: two reads of the stream for each of the 4 subjects of a
	// batch of 64. Baseline: one raw publisher with the same expectation.
	const batch = 64
	factsStore := func(d time.Duration) (float64, time.Duration, error) {
		pubs := make([]eventstore.Publication, batch)
		n, el, err := laneLoop(ctx, 1, d, func(_, _ int) error {
			for i := range pubs {
				l := storeLanes[i%len(storeLanes)]
				e := l.events[0]
				e.ID = newID()
				pubs[i] = eventstore.Publication{Subject: l.subject, Event: e}
			}
			n, err := store.AppendFacts(ctx, pubs)
			if err == nil && n != batch {
				err = fmt.Errorf("stored %d of %d", n, batch)
			}
			return err
		})
		return float64(n * batch), el, err
	}
	factsRaw := func(d time.Duration) (float64, time.Duration, error) {
		n, el, err := laneLoop(ctx, 1, d, func(_, _ int) error {
			for i := range batch {
				if err := appendRaw(rawLanes[i%len(rawLanes)], 0); err != nil {
					return err
				}
			}
			return nil
		})
		return float64(n * batch), el, err
	}
	pr, err = interleave(r.s.appendDur, r.appendSlice(), factsRaw, factsStore)
	if err != nil {
		return fmt.Errorf("append facts: %w", err)
	}
	f = ratioFigure("append_facts", "append rate, Store.AppendFacts (failed logins and tallies; 1 writer, fsync per message)", "events/s",
		pr.rateB(), pr.rateA(), "js.Publish+ExpectLastSeqPerSubject", 0.7)
	f.Note = pr.note()
	r.add(withDetail(withDetail(f, pr.detail()), map[string]any{"store_events": pr.opsB, "raw_events": pr.opsA}))

	// Uses as the recorder appends them now: Store.RecordUses of a batch,
	// each use sealed on its own and published asynchronously to its
	// user's use subject without an expected sequence, every ack awaited
	// (so the two sides now differ by the sealing). Baseline: the same
	// kind of bytes (standalone, signed uses, made ahead) published
	// asynchronously to the same subjects, all acks awaited per batch.
	useSubjects := make([]string, len(storeLanes))
	rawUses := make([][]byte, len(storeLanes))
	for i, l := range storeLanes {
		e := l.events[0]
		useSubjects[i] = eventstore.UseSubject(e.UserID)
		e.ID = newID()
		if err := e.Seal("", key); err != nil {
			return err
		}
		if rawUses[i], err = e.Encode(); err != nil {
			return err
		}
	}
	usesStore := func(d time.Duration) (float64, time.Duration, error) {
		facts := make([]ports.Fact, batch)
		n, el, err := laneLoop(ctx, 1, d, func(_, _ int) error {
			for i := range facts {
				e := storeLanes[i%len(storeLanes)].events[0]
				e.ID = newID()
				facts[i] = ports.Fact{Event: e}
			}
			n, err := store.RecordUses(ctx, facts)
			if err == nil && n != batch {
				err = fmt.Errorf("stored %d of %d", n, batch)
			}
			return err
		})
		return float64(n * batch), el, err
	}
	usesRaw := func(d time.Duration) (float64, time.Duration, error) {
		n, el, err := laneLoop(ctx, 1, d, func(_, _ int) error {
			acks := make([]jetstream.PubAckFuture, 0, batch)
			for i := range batch {
				// A fresh message id each time, or the duplicate window
				// would answer from memory.
				a, err := js.PublishAsync(useSubjects[i%len(useSubjects)], rawUses[i%len(rawUses)], jetstream.WithMsgID(newID()))
				if err != nil {
					return err
				}
				acks = append(acks, a)
			}
			for _, a := range acks {
				select {
				case <-a.Ok():
				case err := <-a.Err():
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
		return float64(n * batch), el, err
	}
	pr, err = interleave(r.s.appendDur, r.appendSlice(), usesRaw, usesStore)
	if err != nil {
		return fmt.Errorf("record uses: %w", err)
	}
	f = ratioFigure("record_uses", "append rate, Store.RecordUses of session_used (the uses path: use subjects, no expected sequence; fsync per message)", "events/s",
		pr.rateB(), pr.rateA(), "js.PublishAsync of the same kind of bytes", 0.7)
	f.Note = pr.note()
	r.add(withDetail(withDetail(f, pr.detail()), map[string]any{"store_events": pr.opsB, "raw_events": pr.opsA, "batch": batch}))
	return nil
}

// streamVersions is the VersionSource of the append runs: the bench has no
// projection and is the only writer of its stream, so it takes a subject's
// head from the stream's copy of the subject's last message. The ledger
// never does that (a forged message at the end of a subject must not become
// the head a signed event vouches for); its projection supplies heads.
type streamVersions struct{ stream jetstream.Stream }

func (v streamVersions) SubjectVersion(ctx context.Context, subject string, seq uint64) (eventstore.Version, error) {
	if seq == 0 {
		return eventstore.Version{}, nil
	}
	m, err := v.stream.GetMsg(ctx, seq)
	if err != nil {
		return eventstore.Version{}, fmt.Errorf("head of %s: %w", subject, err)
	}
	e, err := domain.DecodeEvent(m.Data)
	if err != nil {
		return eventstore.Version{}, fmt.Errorf("head of %s: %w", subject, err)
	}
	return eventstore.Version{Seq: seq, Head: e.Hash, Time: e.Time}, nil
}

// laneLoop runs fn(worker, k) in n goroutines until dur has passed; k counts
// each worker's calls.
func laneLoop(ctx context.Context, n int, dur time.Duration, fn func(w, k int) error) (int, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(dur)
	counts := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; time.Now().Before(deadline) && ctx.Err() == nil; k++ {
				if err := fn(w, k); err != nil {
					errs[w] = err
					return
				}
				counts[w]++
			}
		}()
	}
	wg.Wait()
	total := 0
	for w := range n {
		if errs[w] != nil {
			return 0, 0, errs[w]
		}
		total += counts[w]
	}
	return total, time.Since(start), ctx.Err()
}
