package eventstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// ledgerLog builds a stream's messages by hand: events sealed by a key of
// the test's choosing onto the head the builder keeps per subject, or
// linked wherever a forger wants.
type ledgerLog struct {
	t      *testing.T
	prefix string // of the test stream's subjects
	recs   []eventstore.Record
	heads  map[string]string
	n      int
	pins   map[uint64]eventstore.StreamDigest
}

func newLedgerLog(t *testing.T, prefix string, first domain.SigningKey) *ledgerLog {
	l := &ledgerLog{t: t, prefix: prefix, heads: map[string]string{}}
	l.append(eventstore.KeysSubject, domain.IntroduceKey(first, at), first)
	return l
}

// verify publishes the log to a new stream of its own, named name, and
// verifies it trusting trusted, with the log's pins.
func (l *ledgerLog) verify(ctx context.Context, js jetstream.JetStream, name string, trusted ...domain.PublicKey) eventstore.VerifyReport {
	l.t.Helper()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{l.prefix + ">"}})
	if err != nil {
		l.t.Fatal(err)
	}
	for _, r := range l.recs {
		if _, err := js.Publish(ctx, l.prefix+r.Subject, r.Data); err != nil {
			l.t.Fatal(err)
		}
	}
	rep, err := eventstore.NewReader(s).Verify(ctx, eventstore.VerifyOptions{Trusted: trusted, Pins: l.pins})
	if err != nil {
		l.t.Fatal(err)
	}
	return rep
}

// append seals e onto subject's head with k, as a writer holding k does,
// and returns its sequence.
func (l *ledgerLog) append(subject string, e domain.Event, k domain.SigningKey) uint64 {
	l.t.Helper()
	l.n++
	e.ID = fmt.Sprintf("e%d", l.n)
	if err := e.Seal(l.heads[subject], k); err != nil {
		l.t.Fatal(err)
	}
	l.heads[subject] = e.Hash
	return l.put(subject, e)
}

// forge appends an event linked onto prev without moving subject's head
// (no writer links to a forgery), claiming the key kid but signed by
// forger, and returns its sequence and hash.
func (l *ledgerLog) forge(subject, prev, kid string, forger domain.SigningKey) (uint64, string) {
	l.t.Helper()
	l.n++
	e := use("ua", "s", l.n)
	e.ID = fmt.Sprintf("forged%d", l.n)
	if err := e.Seal(prev, forger); err != nil { // a signature by forger...
		l.t.Fatal(err)
	}
	e.KeyID = kid // ...over an event naming kid
	e.Hash, _ = e.ComputeHash()
	return l.put(subject, e), e.Hash
}

// rewrite replaces old with new in the hashed part of the message at seq
// and recomputes its hash over the bytes as stored, keeping its MAC and
// signature: what someone without the key can do to a stored event.
func (l *ledgerLog) rewrite(seq uint64, old, new string) {
	l.t.Helper()
	data := string(l.recs[seq-1].Data)
	i := strings.Index(data, `,"hash":"`)
	e, err := domain.DecodeEvent(l.recs[seq-1].Data)
	if i < 0 || err != nil || !strings.Contains(data[:i], old) {
		l.t.Fatalf("rewrite %d: %q not in %s (%v)", seq, old, data, err)
	}
	hashed := strings.Replace(data[:i], old, new, 1) + "}"
	sum := sha256.Sum256([]byte(hashed))
	hash := "sha256:" + hex.EncodeToString(sum[:])
	l.recs[seq-1].Data = []byte(hashed[:len(hashed)-1] + `,"hash":"` + hash + `","mac":"` + e.MAC + `","sig":"` + e.Sig + `"}`)
}

// copySig gives the event at seq the signature of the event at from:
// well formed, by the key in force, over another hash.
func (l *ledgerLog) copySig(seq, from uint64) {
	l.t.Helper()
	e, err := domain.DecodeEvent(l.recs[seq-1].Data)
	src, err2 := domain.DecodeEvent(l.recs[from-1].Data)
	if err != nil || err2 != nil {
		l.t.Fatalf("copySig %d from %d: %v, %v", seq, from, err, err2)
	}
	e.Sig = src.Sig
	if l.recs[seq-1].Data, err = e.Encode(); err != nil {
		l.t.Fatal(err)
	}
}

// pin records the stream digest of what was written so far.
func (l *ledgerLog) pin() {
	var d eventstore.StreamDigest
	for _, r := range l.recs {
		r.Subject = l.prefix + r.Subject
		d = d.Next(r)
	}
	l.pins = map[uint64]eventstore.StreamDigest{uint64(len(l.recs)): d}
}

func (l *ledgerLog) put(subject string, e domain.Event) uint64 {
	l.t.Helper()
	data, err := e.Encode()
	if err != nil {
		l.t.Fatal(err)
	}
	l.recs = append(l.recs, eventstore.Record{Seq: uint64(len(l.recs) + 1), Subject: subject, Data: data})
	return uint64(len(l.recs))
}

// want is a problem a test expects: its sequence and kind.
type want struct {
	seq  uint64
	kind string
}

// TestVerifyChecksSignaturesThroughTheChains: Verify checks one signature
// per subject (its newest event) and every key event, and a forgery
// anywhere in a chain, whatever key it names, is still reported on that
// event alone, as an event-by-event check reports it.
func TestVerifyChecksSignaturesThroughTheChains(t *testing.T) {
	nc := startNATS(t, t.TempDir())
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	k1, _ := domain.NewSigningKey(bytes.Repeat([]byte{1}, 32))
	k2, _ := domain.NewSigningKey(bytes.Repeat([]byte{2}, 32))
	forger, _ := domain.NewSigningKey(bytes.Repeat([]byte{7}, 32))
	ua, ub := eventstore.UserSubject("ua"), eventstore.UserSubject("ub")
	ev := func(i int) domain.Event { return use("ua", "s", i) }
	rotate := func(l *ledgerLog) {
		l.append(eventstore.KeysSubject, domain.RotateKey(k1.ID(), k2, at.Add(time.Hour)), k1)
	}
	cases := []struct {
		name  string
		build func(l *ledgerLog) []want
		sigs  uint64 // signatures checked, if not 0
	}{
		{"clean, across a rotation", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			l.append(ub, ev(2), k1)
			l.append(ua, ev(3), k1)
			rotate(l)
			l.append(ua, ev(4), k2)
			l.append(ua, ev(5), k2)
			return nil
		}, 4}, // two key events, two subjects' newest
		{"a forgery naming the key in force, between genuine events", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			f, _ := l.forge(ua, l.heads[ua], k1.ID(), forger)
			l.append(ua, ev(2), k1)
			l.append(ua, ev(3), k1)
			return []want{{f, eventstore.ProblemSignature}}
		}, 0},
		{"a forged newest event", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			l.append(ua, ev(2), k1)
			l.append(ub, ev(3), k1)
			f, _ := l.forge(ua, l.heads[ua], k1.ID(), forger)
			return []want{{f, eventstore.ProblemSignature}}
		}, 0},
		{"a forged tail of two events", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			f1, h := l.forge(ua, l.heads[ua], k1.ID(), forger)
			l.append(ub, ev(2), k1)
			f2, _ := l.forge(ua, h, k1.ID(), forger)
			return []want{{f1, eventstore.ProblemSignature}, {f2, eventstore.ProblemMissing}}
		}, 0},
		{"an event by the retired key, then genuine ones", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			rotate(l)
			l.append(ua, ev(2), k2)
			// Whoever got hold of the retired key signs with it.
			f, _ := l.forge(ua, l.heads[ua], k1.ID(), k1)
			l.append(ua, ev(3), k2)
			l.append(ua, ev(4), k2)
			return []want{{f, eventstore.ProblemSignature}}
		}, 0},
		{"a newest event by the retired key", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			rotate(l)
			l.append(ua, ev(2), k2)
			f, _ := l.forge(ua, l.heads[ua], k1.ID(), k1)
			return []want{{f, eventstore.ProblemSignature}}
		}, 0},
		{"a malformed signature between genuine events", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			seq := l.append(ua, ev(2), k1)
			next := l.append(ua, ev(3), k1)
			e, _ := domain.DecodeEvent(l.recs[seq-1].Data)
			e.Sig = e.Sig[:len(e.Sig)-2]
			l.recs[seq-1].Data, _ = e.Encode()
			// Not authentic, so the next event links to no authentic one,
			// as an event-by-event check finds.
			return []want{{seq, eventstore.ProblemSignature}, {next, eventstore.ProblemMissing}}
		}, 0},
		{"the signature bytes of an event before the newest, replaced: vouched for by the newest, caught by a pin", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			seq := l.append(ua, ev(2), k1)
			last := l.append(ua, ev(3), k1)
			l.pin()
			l.copySig(seq, last)
			return []want{{last, eventstore.ProblemPin}}
		}, 0},
		// The first read decodes an event whose signature is left to its
		// subject's newest one without checking that its payload is JSON
		// (domain.DecodeVouched): bytes no writer stored must still be
		// reported where and as an event-by-event check reports them.
		{"an event before the newest rewritten with a payload that is not JSON, its hash recomputed", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			seq := l.append(ua, ev(2), k1)
			next := l.append(ua, ev(3), k1)
			l.rewrite(seq, `"payload":{}`, `"payload":{"a":}`)
			return []want{{seq, eventstore.ProblemCorrupt}, {next, eventstore.ProblemMissing}}
		}, 0},
		{"a newest event rewritten with a payload that is not JSON, its hash recomputed", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			seq := l.append(ua, ev(2), k1)
			l.append(ub, ev(3), k1)
			l.rewrite(seq, `"payload":{}`, `"payload":{"a":}`)
			return []want{{seq, eventstore.ProblemCorrupt}}
		}, 0},
		{"an event before the newest rewritten without a time, its hash recomputed", func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			seq := l.append(ua, ev(2), k1)
			next := l.append(ua, ev(3), k1)
			e, _ := domain.DecodeEvent(l.recs[seq-1].Data)
			l.rewrite(seq, `"time":"`+e.Time.Format(time.RFC3339Nano)+`"`, `"time":"0001-01-01T00:00:00Z"`)
			return []want{{seq, eventstore.ProblemCorrupt}, {next, eventstore.ProblemMissing}}
		}, 0},
	}
	// Each case again with heads checked ahead as soon as they stay put
	// for a message, one at a time: the same problems.
	for m, mode := range []string{"", ", heads checked ahead"} {
		for i, c := range cases {
			t.Run(c.name+mode, func(t *testing.T) {
				if m == 1 {
					defer eventstore.Speculate(1, 1)()
				}
				verifyCase(t, ctx, js, fmt.Sprintf("v%d%d", m, i), k1, c.build, c.sigs*uint64(1-m))
			})
		}
	}
}

// verifyCase builds a log with build, verifies it as name and checks that
// it reports the problems build wants, in order, and if sigs is not 0 that
// it checked that many signatures.
func verifyCase(t *testing.T, ctx context.Context, js jetstream.JetStream, name string, k1 domain.SigningKey, build func(*ledgerLog) []want, sigs uint64) eventstore.VerifyReport {
	t.Helper()
	l := newLedgerLog(t, name+".", k1)
	wants := build(l)
	rep := l.verify(ctx, js, strings.ToUpper(name), k1.Public())
	var got, exp []string
	for _, p := range rep.Problems {
		got = append(got, fmt.Sprintf("%d %s", p.Seq, p.Kind))
	}
	for _, w := range wants {
		exp = append(exp, fmt.Sprintf("%d %s", w.seq, w.kind))
	}
	if strings.Join(got, ", ") != strings.Join(exp, ", ") {
		t.Fatalf("problems %v, want %v (all: %v)", got, exp, rep.Problems)
	}
	if !rep.Anchored || rep.Messages != uint64(len(l.recs)) {
		t.Fatalf("anchored %v, %d messages of %d", rep.Anchored, rep.Messages, len(l.recs))
	}
	if sigs > 0 && rep.Signatures != sigs {
		t.Fatalf("%d signatures checked, want %d", rep.Signatures, sigs)
	}
	return rep
}

// TestVerifyChecksHeadsAheadAtTheirFinalValue: with heads checked ahead
// once they stay put for two messages, a head checked ahead that then
// moves leaves its subject's final head to be checked (a forgery there is
// reported, as is one checked ahead itself), and a verdict on a head that
// moved on is dropped: an earlier event's replaced signature stays vouched
// for by the newest, as without checking ahead.
func TestVerifyChecksHeadsAheadAtTheirFinalValue(t *testing.T) {
	defer eventstore.Speculate(2, 1)()
	nc := startNATS(t, t.TempDir())
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	k1, _ := domain.NewSigningKey(bytes.Repeat([]byte{1}, 32))
	forger, _ := domain.NewSigningKey(bytes.Repeat([]byte{7}, 32))
	ua, ub := eventstore.UserSubject("ua"), eventstore.UserSubject("ub")
	ev := func(i int) domain.Event { return use("ua", "s", i) }
	// ua's first head stays put for three messages on ub: checked ahead.
	settle := func(l *ledgerLog) {
		l.append(ua, ev(1), k1)
		for i := range 3 {
			l.append(ub, ev(10+i), k1)
		}
	}
	t.Run("moved on after the check", func(t *testing.T) {
		rep := verifyCase(t, ctx, js, "s1", k1, func(l *ledgerLog) []want {
			settle(l)
			l.append(ua, ev(2), k1)
			return nil
		}, 0)
		// The key event, ua's first head ahead, then the final heads of
		// ua and ub: the final head of ua was checked too.
		if rep.Signatures != 4 {
			t.Fatalf("%d signatures checked, want 4", rep.Signatures)
		}
	})
	t.Run("moved on to a forgery after the check", func(t *testing.T) {
		verifyCase(t, ctx, js, "s2", k1, func(l *ledgerLog) []want {
			settle(l)
			f, _ := l.forge(ua, l.heads[ua], k1.ID(), forger)
			return []want{{f, eventstore.ProblemSignature}}
		}, 0)
	})
	t.Run("moved on to a forgery while checked ahead", func(t *testing.T) {
		verifyCase(t, ctx, js, "s5", k1, func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			l.append(ub, ev(10), k1)
			// ua's first head, put for two messages, goes ahead before
			// this is judged; its verdict is taken in after.
			f, _ := l.forge(ua, l.heads[ua], k1.ID(), forger)
			l.append(ub, ev(12), k1)
			return []want{{f, eventstore.ProblemSignature}}
		}, 0)
	})
	t.Run("a forged head checked ahead", func(t *testing.T) {
		verifyCase(t, ctx, js, "s3", k1, func(l *ledgerLog) []want {
			l.append(ua, ev(1), k1)
			f, _ := l.forge(ua, l.heads[ua], k1.ID(), forger)
			for i := range 3 {
				l.append(ub, ev(10+i), k1)
			}
			return []want{{f, eventstore.ProblemSignature}}
		}, 0)
	})
	t.Run("a replaced signature checked ahead, then vouched for by the newest", func(t *testing.T) {
		verifyCase(t, ctx, js, "s4", k1, func(l *ledgerLog) []want {
			seq := l.append(ua, ev(1), k1)
			for i := range 3 {
				l.append(ub, ev(10+i), k1)
			}
			last := l.append(ua, ev(2), k1)
			l.pin()
			l.copySig(seq, last)
			return []want{{last, eventstore.ProblemPin}}
		}, 0)
	})
}
