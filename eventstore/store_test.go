package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

func startStore(t *testing.T) (*eventstore.Store, *nats.Conn) {
	t.Helper()
	emb, err := eventstore.StartEmbedded(eventstore.EmbeddedConfig{Dir: t.TempDir(), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	store, err := eventstore.Open(context.Background(), nc, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return store, nc
}

var at = time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)

func use(userID, sessionID string, i int) domain.Event {
	e := domain.SessionUse(userID, sessionID, at.Add(time.Duration(i)*time.Minute))
	e.ID = fmt.Sprintf("%s-use-%d", userID, i)
	return e
}

func TestAppendIsOptimistic(t *testing.T) {
	store, _ := startStore(t)
	ctx := context.Background()
	subj := eventstore.UserSubject("u1")
	v1, err := store.Append(ctx, subj, eventstore.Version{}, use("u1", "s", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, subj, eventstore.Version{}, use("u1", "s", 2)); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("append at a stale version: err %v, want ErrConflict", err)
	}
	v2, err := store.Append(ctx, subj, v1, use("u1", "s", 2), use("u1", "s", 3))
	if err != nil || v2.Seq != v1.Seq+2 {
		t.Fatalf("append at the current version: %+v %v", v2, err)
	}
	head, err := store.Head(ctx, subj)
	if err != nil || head != v2 {
		t.Fatalf("Head = %+v %v, want %+v", head, err, v2)
	}
	// Retrying the last append (same event id, as after a lost ack) is
	// recognised by its message id: same sequence, nothing new stored.
	again, err := store.Append(ctx, subj, v2, use("u1", "s", 3))
	if err != nil || again.Seq != v2.Seq {
		t.Fatalf("retried append = %+v %v, want the original sequence %d", again, err, v2.Seq)
	}
	if last, _ := store.LastSeq(ctx); last != v2.Seq {
		t.Fatalf("stream grew to %d on a retried append", last)
	}
}

func TestAppendFactsLinkToTheHead(t *testing.T) {
	store, _ := startStore(t)
	ctx := context.Background()
	subj := eventstore.UserSubject("u2")
	if _, err := store.Append(ctx, subj, eventstore.Version{}, use("u2", "s", 0)); err != nil {
		t.Fatal(err)
	}
	// Facts from "another instance" (a second store on the same stream
	// has its own head cache) interleave with ours.
	pubs := []eventstore.Publication{{Subject: subj, Event: use("u2", "s", 1)}, {Subject: subj, Event: use("u2", "s", 2)}}
	if n, err := store.AppendFacts(ctx, pubs); err != nil || n != 2 {
		t.Fatalf("AppendFacts = %d %v", n, err)
	}
	// A fact with a message id already used in the window is stored once.
	dup := eventstore.Publication{Subject: subj, Event: use("u2", "s", 3), MsgID: "shared-use-bucket"}
	dup2 := eventstore.Publication{Subject: subj, Event: use("u2", "s", 4), MsgID: "shared-use-bucket"}
	if n, err := store.AppendFacts(ctx, []eventstore.Publication{dup, dup2}); err != nil || n != 2 {
		t.Fatalf("AppendFacts dup = %d %v", n, err)
	}
	var count int
	if err := store.ReadSubject(ctx, subj, func(eventstore.Record) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	if count != 4 {
		t.Fatalf("subject holds %d events, want 4 (the duplicate message id stored once)", count)
	}
	rep, err := eventstore.Verify(ctx, store.Stream(), eventstore.VerifyOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("verify after facts: %+v %v", rep.Problems, err)
	}
}

func TestStreamIsAppendOnly(t *testing.T) {
	store, nc := startStore(t)
	ctx := context.Background()
	if _, err := store.Append(ctx, eventstore.UserSubject("u3"), eventstore.Version{}, use("u3", "s", 1)); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, eventstore.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(ctx, 1); err == nil {
		t.Error("deleting a message succeeded")
	}
	if err := stream.Purge(ctx); err == nil {
		t.Error("purging the stream succeeded")
	}
	cfg := stream.CachedInfo().Config
	cfg.DenyDelete = false
	if _, err := js.UpdateStream(ctx, cfg); err == nil {
		t.Error("turning DenyDelete off succeeded")
	}
}

// TestVerifyDetectsTampering builds a clean ledger, copies it into test
// streams with one manipulation each, and checks that Verify names it.
func TestVerifyDetectsTampering(t *testing.T) {
	store, nc := startStore(t)
	ctx := context.Background()
	// Two users, interleaved, five events each.
	versions := map[string]eventstore.Version{}
	for i := range 5 {
		for _, u := range []string{"ua", "ub"} {
			v, err := store.Append(ctx, eventstore.UserSubject(u), versions[u], use(u, "s", i))
			if err != nil {
				t.Fatal(err)
			}
			versions[u] = v
		}
	}
	var recs []eventstore.Record
	if err := store.ReadFrom(ctx, 1, func(r eventstore.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	clean, err := eventstore.Verify(ctx, store.Stream(), eventstore.VerifyOptions{})
	if err != nil || !clean.OK() || clean.Messages != 10 || clean.Subjects != 2 {
		t.Fatalf("clean ledger: %+v %v", clean, err)
	}

	js, _ := jetstream.New(nc)
	n := 0
	copyStream := func(t *testing.T, mutate func([]eventstore.Record) []eventstore.Record) jetstream.Stream {
		t.Helper()
		n++
		name := fmt.Sprintf("COPY%d", n)
		prefix := fmt.Sprintf("copy%d.", n)
		s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ">"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range mutate(append([]eventstore.Record(nil), recs...)) {
			if _, err := js.Publish(ctx, prefix+r.Subject, r.Data); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	alter := func(r eventstore.Record, rehash bool) eventstore.Record {
		e, err := domain.DecodeEvent(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		e.Time = e.Time.Add(-24 * time.Hour) // backdate a use
		if rehash {
			if err := e.Seal(e.PrevHash); err != nil {
				t.Fatal(err)
			}
		}
		r.Data, _ = e.Encode()
		return r
	}
	cases := []struct {
		name    string
		mutate  func([]eventstore.Record) []eventstore.Record
		pins    map[uint64]eventstore.StreamDigest
		seq     uint64
		kind    string
		eventOf int // index into recs of the event named, -1 for none
	}{
		{"verbatim copy", func(r []eventstore.Record) []eventstore.Record { return r }, nil, 0, "", -1},
		{"altered event", func(r []eventstore.Record) []eventstore.Record { r[4] = alter(r[4], false); return r }, nil, 5, eventstore.ProblemAltered, 4},
		{"altered and re-hashed event", func(r []eventstore.Record) []eventstore.Record { r[4] = alter(r[4], true); return r }, nil, 7, eventstore.ProblemMissing, 6},
		{"dropped event", func(r []eventstore.Record) []eventstore.Record { return append(r[:4], r[5:]...) }, nil, 6, eventstore.ProblemMissing, 6},
		{"two events swapped", func(r []eventstore.Record) []eventstore.Record { r[2], r[4] = r[4], r[2]; return r }, nil, 3, eventstore.ProblemReordered, 4},
		{"newest event re-hashed, caught by a pin", func(r []eventstore.Record) []eventstore.Record { r[9] = alter(r[9], true); return r },
			map[uint64]eventstore.StreamDigest{10: clean.Digest}, 10, eventstore.ProblemPin, -1},
		{"garbage appended", func(r []eventstore.Record) []eventstore.Record {
			return append(r, eventstore.Record{Subject: r[0].Subject, Data: []byte("not an event")})
		}, nil, 11, eventstore.ProblemCorrupt, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := copyStream(t, c.mutate)
			rep, err := eventstore.Verify(ctx, s, eventstore.VerifyOptions{Pins: c.pins})
			if err != nil {
				t.Fatal(err)
			}
			if c.kind == "" {
				if !rep.OK() || rep.Digest == clean.Digest {
					// Subjects differ in the copy, so the digest must too.
					t.Fatalf("verbatim copy: problems %v, digest equal to original: %v", rep.Problems, rep.Digest == clean.Digest)
				}
				return
			}
			if rep.OK() {
				t.Fatalf("%s not detected", c.name)
			}
			first := rep.Problems[0]
			if first.Seq != c.seq || first.Kind != c.kind {
				t.Fatalf("first problem %s, want seq %d kind %s (all: %v)", first, c.seq, c.kind, rep.Problems)
			}
			if c.eventOf >= 0 {
				e, _ := domain.DecodeEvent(recs[c.eventOf].Data)
				if first.EventID != e.ID {
					t.Fatalf("problem names event %s, want %s", first.EventID, e.ID)
				}
			}
			if !strings.Contains(first.String(), c.kind) {
				t.Fatalf("report %q does not say %s", first.String(), c.kind)
			}
		})
	}
}
