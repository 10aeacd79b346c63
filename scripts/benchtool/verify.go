package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/projections"
)

// The cost of authenticated events, in three figures:
//
//   - check_cost: what an instance does to every event before applying it
//     (decode, CheckHash, the MAC under the key in force), timed in this
//     process on the small data set's events, next to decoding alone;
//   - live_apply_rate: Projection.ApplyBatch of one record per batch, as
//     the live subscription's handler calls it, against the same kind of
//     events in catch-up batches of 2048, both with the checks on;
//   - verify_rate: eventstore.Verify (what `ledger audit verify` runs:
//     every hash, chain link and key id, the Ed25519 signatures of each
//     subject's newest event, key events and uses, on all cores) against a
//     raw ordered read of the large data set.
//
// The rebuild figure (rebuild.go) is the fourth: `ledger rebuild` checks
// every event the same way.

// checkRounds: each variant of the check cost is timed this many times,
// alternating, and the fastest round counts (the machine is shared; the
// slow rounds are other tenants, not the code).
const checkRounds = 7

// sigSample is how many events the single-core Ed25519 figure times.
const sigSample = 4096

// applyChunk is how many uses each side of the live-apply comparison
// applies before the other side takes over.
const applyChunk = 4096

// checkBench times the per-event checks and the live apply on the small
// data set (no server running on it).
func (r *runner) checkBench(ctx context.Context, ds *dataset) error {
	recs, err := readAll(ctx, ds.dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Base(ds.dir), err)
	}
	ring, key, err := loadKey(ds.keyFile)
	if err != nil {
		return err
	}
	cost, err := measureChecks(recs, ring, key.Public(), sigSample)
	if err != nil {
		return err
	}
	f := ratioFigure("check_cost", fmt.Sprintf("per-event checks before apply: decode + CheckHash + MAC (one core, %d seeded events)", len(recs)),
		"µs/event", cost.full, cost.decode, "decode only", 0)
	f.Note = fmt.Sprintf("checks %.2f µs: hash %.2f, MAC %.2f; an Ed25519 verify alone %.1f µs", cost.checks(),
		cost.hash, cost.mac, cost.sig)
	if r.rebuildUS > 0 {
		f.Note += fmt.Sprintf("; rebuild spends %.1f µs/event in all", r.rebuildUS)
	}
	r.add(withDetail(f, map[string]any{
		"events": len(recs), "rounds": checkRounds, "decode_us": cost.decode, "hash_us": cost.hash, "mac_us": cost.mac,
		"decode_hash_mac_us": cost.full, "checks_us": cost.checks(),
		"ed25519_verify_us": cost.sig, "ed25519_sample": cost.sigN,
		"note": "ratio is cost over decode alone (lower is better); best of the rounds",
	}))
	return r.liveApplyBench(ds, recs, ring, key)
}

// readAll reads every message of dataDir's stream into memory.
func readAll(ctx context.Context, dataDir string) ([]eventstore.Record, error) {
	emb, nc, err := startNATS(filepath.Join(dataDir, "nats"), "bench-check", false)
	if err != nil {
		return nil, err
	}
	defer emb.Shutdown()
	defer nc.Close()
	store, err := eventstore.Open(ctx, nc, eventstore.Config{})
	if err != nil {
		return nil, err
	}
	var recs []eventstore.Record
	err = store.ReadFrom(ctx, 1, func(rec eventstore.Record) error {
		rec.Data = slices.Clone(rec.Data)
		recs = append(recs, rec)
		return nil
	})
	return recs, err
}

// checkCost is µs per event: decode alone; hash and MAC each alone, on
// decoded events; all three in a row, as apply does them (full); and one
// Ed25519 verification alone (sig, on sigN events; 0 if not timed).
type checkCost struct {
	decode, hash, mac, full, sig float64
	sigN                         int
}

// checks is what the checks add to decoding: hash and MAC.
func (c checkCost) checks() float64 { return c.hash + c.mac }

// measureChecks times, per event, what Projection.apply does before it
// folds an event: domain.DecodeEvent, Event.CheckHash (re-marshal and
// SHA-256) and the MAC under the key in force (Keyring.Verify). The chain
// link is a string comparison with the head the apply reads anyway, so it
// is not timed apart. Each part is timed on its own over all of recs, and
// the three in a row; the variants alternate for checkRounds rounds and
// each one's fastest round counts. Every event must pass.
func measureChecks(recs []eventstore.Record, ring *domain.Keyring, pub domain.PublicKey, sigN int) (checkCost, error) {
	events := make([]domain.Event, len(recs))
	for i, rec := range recs {
		e, err := domain.DecodeEvent(rec.Data)
		if err != nil {
			return checkCost{}, fmt.Errorf("seeded message at seq %d: %w", rec.Seq, err)
		}
		events[i] = e
	}
	variants := []func(i int) error{
		func(i int) error {
			_, err := domain.DecodeEvent(recs[i].Data)
			return err
		},
		func(i int) error { return events[i].CheckHash() },
		func(i int) error { return ring.Verify(events[i], pub) },
		func(i int) error {
			e, err := domain.DecodeEvent(recs[i].Data)
			if err == nil {
				err = e.CheckHash()
			}
			if err == nil {
				err = ring.Verify(e, pub)
			}
			return err
		},
	}
	best := make([]time.Duration, len(variants))
	for round := range checkRounds {
		for k := range variants {
			v := k
			if round%2 == 1 {
				v = len(variants) - 1 - k // alternate the order
			}
			start := time.Now()
			for i := range recs {
				if err := variants[v](i); err != nil {
					return checkCost{}, fmt.Errorf("seeded event at seq %d does not check: %w", recs[i].Seq, err)
				}
			}
			if el := time.Since(start); best[v] == 0 || el < best[v] {
				best[v] = el
			}
		}
	}
	per := func(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(n) }
	n := len(recs)
	c := checkCost{decode: per(best[0], n), hash: per(best[1], n), mac: per(best[2], n), full: per(best[3], n)}
	if sigN == 0 {
		return c, nil
	}
	// An auditor's check, for comparison: the Ed25519 signature alone.
	sample := events[:min(sigN, len(events))]
	var sigBest time.Duration
	for range 2 {
		start := time.Now()
		for _, e := range sample {
			if err := domain.VerifySignature(e, pub); err != nil {
				return c, fmt.Errorf("seeded event %s: %w", e.ID, err)
			}
		}
		if el := time.Since(start); sigBest == 0 || el < sigBest {
			sigBest = el
		}
	}
	c.sig, c.sigN = per(sigBest, len(sample)), len(sample)
	return c, nil
}

// liveApplyBench applies the small data set to a new projection in catch-up
// batches, then session_used events signed with the data set's key, in
// alternating chunks: one record per ApplyBatch (the live subscription's
// handler, minus NATS delivery and the ack) and batches of 2048 (CatchUp).
// Every event is checked as the server checks it; none may be rejected.
func (r *runner) liveApplyBench(ds *dataset, recs []eventstore.Record, ring *domain.Keyring, key domain.SigningKey) error {
	dir := filepath.Join(r.work, "apply-projection")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	proj, err := projections.Open(dir, ring, nil, nil)
	if err != nil {
		return err
	}
	defer proj.Close()
	start := time.Now()
	if err := applyChunks(proj, recs, 2048); err != nil {
		return err
	}
	catchUp := time.Since(start)

	// Each user subject's head, and its sessions, as the seeding left them.
	type ref struct{ subject, userID, sessionID string }
	heads := map[string]eventstore.Version{}
	var sessions []ref
	for _, rec := range recs {
		e, err := domain.DecodeEvent(rec.Data)
		if err != nil {
			return err
		}
		heads[rec.Subject] = eventstore.Version{Seq: rec.Seq, Head: e.Hash, Time: e.Time}
		if e.Type == domain.EventSessionStarted {
			sessions = append(sessions, ref{rec.Subject, e.UserID, e.SessionID})
		}
	}
	if len(sessions) == 0 {
		return fmt.Errorf("%s holds no sessions", ds.dir)
	}
	// The uses, sealed into their users' chains and signed as the store
	// would append them, with the sequences they would get.
	pairs := r.s.applyPairs
	n := 2 * pairs * applyChunk
	seq := recs[len(recs)-1].Seq
	now := time.Now()
	uses := make([]eventstore.Record, 0, n)
	for i := range n {
		s := sessions[i%len(sessions)]
		v := heads[s.subject]
		e := domain.SessionUse(s.userID, s.sessionID, now.Add(time.Duration(i)*time.Microsecond))
		e.ID = newID()
		e.Time = domain.NextEventTime(e.Time, v.Time)
		if err := e.Seal(v.Head, key); err != nil {
			return err
		}
		data, err := e.Encode()
		if err != nil {
			return err
		}
		seq++
		heads[s.subject] = eventstore.Version{Seq: seq, Head: e.Hash, Time: e.Time}
		uses = append(uses, eventstore.Record{Seq: seq, Subject: s.subject, Data: data, Stored: e.Time})
	}

	// The checks on these uses alone (smaller events than the seeded mix).
	useCost, err := measureChecks(uses[:min(len(uses), 2*applyChunk)], ring, key.Public(), 0)
	if err != nil {
		return err
	}
	useChecks := useCost.checks()

	// Alternate A (batches of 2048) and B (one per batch): A B, B A, ...
	var pr pairResult
	next := uses
	for i := range pairs {
		var rate [2]float64
		for k := range 2 {
			live := (k == 1) == (i%2 == 0)
			batch := 2048
			if live {
				batch = 1
			}
			chunk := next[:applyChunk]
			next = next[applyChunk:]
			t0 := time.Now()
			if err := applyChunks(proj, chunk, batch); err != nil {
				return err
			}
			el := time.Since(t0).Seconds()
			if live {
				pr.opsB += applyChunk
				pr.secsB += el
				rate[1] = applyChunk / el
			} else {
				pr.opsA += applyChunk
				pr.secsA += el
				rate[0] = applyChunk / el
			}
		}
		pr.sliceRatios = append(pr.sliceRatios, rate[1]/rate[0])
	}
	_, rejected, err := proj.Rejected(0)
	if err != nil {
		return err
	}
	if rejected > 0 || proj.Applied() != seq {
		return fmt.Errorf("live apply: %d events rejected, applied up to %d of %d", rejected, proj.Applied(), seq)
	}
	liveUS := 1e6 / pr.rateB()
	f := ratioFigure("live_apply_rate", "live apply rate, session_used one per ApplyBatch (the live handler), each checked", "events/s",
		pr.rateB(), pr.rateA(), "the same in catch-up batches of 2048", 0)
	f.Note = fmt.Sprintf("%.1f µs/event, of which decode %.2f and checks %.2f (%.0f %%); %s",
		liveUS, useCost.decode, useChecks, 100*useChecks/liveUS, pr.note())
	r.add(withDetail(withDetail(f, pr.detail()), map[string]any{
		"live_events": pr.opsB, "batch_events": pr.opsA, "chunk": applyChunk, "live_us_per_event": liveUS,
		"batch_us_per_event": 1e6 / pr.rateA(), "use_decode_us": useCost.decode, "use_checks_us": useChecks,
		"seeded_events": len(recs), "seeded_catch_up_events_per_s": float64(len(recs)) / catchUp.Seconds(),
		"excludes": "NATS delivery, watermill routing and the ack of the live subscription",
	}))
	return nil
}

// applyChunks applies recs in batches of batch records.
func applyChunks(p *projections.Projection, recs []eventstore.Record, batch int) error {
	for len(recs) > 0 {
		k := min(batch, len(recs))
		if err := p.ApplyBatch(recs[:k]); err != nil {
			return err
		}
		recs = recs[k:]
	}
	return nil
}

// verifyBench runs eventstore.Verify, the check behind `ledger audit
// verify`, on the large data set with the data set's public key as the
// trusted anchor, between two raw ordered reads of the same stream on the
// same server. The ledger must verify without a single problem.
func (r *runner) verifyBench(ctx context.Context, ds *dataset) error {
	pubs, err := keyfile.LoadPublic(ds.keyFile)
	if err != nil {
		return err
	}
	emb, nc, err := startNATS(filepath.Join(ds.dir, "nats"), "bench-verify", false)
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, eventstore.DefaultStream)
	if err != nil {
		return err
	}
	before, err := rawReadStream(ctx, stream)
	if err != nil {
		return fmt.Errorf("raw read: %w", err)
	}
	workers := runtime.NumCPU()
	logf("audit verify (eventstore.Verify, %d workers) on %s", workers, filepath.Base(ds.dir))
	start, cpu := time.Now(), cpuSeconds(os.Getpid())
	rep, err := eventstore.NewReader(stream).Verify(ctx, eventstore.VerifyOptions{Trusted: pubs, Workers: workers})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	took, cpu := time.Since(start), cpuSeconds(os.Getpid())-cpu
	if !rep.OK() || !rep.Anchored {
		first := rep.Problems[:min(5, len(rep.Problems))]
		return fmt.Errorf("the seeded ledger does not verify: %d problems, anchored %v, first: %v", len(rep.Problems), rep.Anchored, first)
	}
	after, err := rawReadStream(ctx, stream)
	if err != nil {
		return fmt.Errorf("raw read: %w", err)
	}
	// The baseline is both reads together: events over time.
	raw := rawReadResult{events: before.events + after.events, cpu: before.cpu + after.cpu}
	raw.rate = float64(raw.events) / (float64(before.events)/before.rate + float64(after.events)/after.rate)
	rate := float64(rep.Messages) / took.Seconds()
	f := ratioFigure("verify_rate", fmt.Sprintf("audit verify rate (eventstore.Verify: hash, chain, Ed25519 through the chains on %d workers, %d events)", workers, rep.Messages),
		"events/s", rate, raw.rate, "raw ordered-consumer read", 0.7)
	f.Note = fmt.Sprintf("%.1f s; %d Ed25519 signatures checked on %d subjects; raw read before %.0f, after %.0f events/s; CPU %.2f µs/event, the read included; %s",
		took.Seconds(), rep.Signatures, rep.Subjects, before.rate, after.rate, cpu*1e6/float64(rep.Messages), raw.budgetNote(0.7))
	r.add(withDetail(f, map[string]any{"events": rep.Messages, "subjects": rep.Subjects, "signatures": rep.Signatures, "seconds": took.Seconds(),
		"workers": workers, "raw_before_events_per_s": before.rate, "raw_after_events_per_s": after.rate, "anchored": rep.Anchored,
		"cpu_us_per_event": cpu * 1e6 / float64(rep.Messages), "raw_cpu_us_per_event": raw.cpuPerEvent(), "cpu_budget_us_per_event_at_goal": raw.budget(0.7)}))
	return nil
}
