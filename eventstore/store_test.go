package eventstore_test

import (
	"bytes"
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
	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/projections"
)

var testKey = func() domain.SigningKey {
	k, err := domain.NewSigningKey(make([]byte, 32))
	if err != nil {
		panic(err)
	}
	return k
}()

// trust is the store's key and version source: a real projection that
// catches up with the stream whenever it is asked for a version.
type trust struct {
	proj  *projections.Projection
	store *eventstore.Store
}

func (tr *trust) SigningKey() (domain.SigningKey, error) { return tr.proj.SigningKey() }

func (tr *trust) SubjectVersion(ctx context.Context, subject string, seq uint64) (eventstore.Version, error) {
	if err := tr.proj.CatchUp(ctx, tr.store.Reader, nil); err != nil {
		return eventstore.Version{}, err
	}
	return tr.proj.SubjectVersion(ctx, subject, seq)
}

// startNATS runs an embedded server on dir for the test and connects to it.
func startNATS(t *testing.T, dir string) *nats.Conn {
	t.Helper()
	emb, err := embedded.Start(embedded.Config{Dir: dir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startStore opens a new ledger: a fresh stream whose first event
// introduces testKey.
func startStore(t *testing.T) (*eventstore.Store, *nats.Conn) {
	t.Helper()
	nc := startNATS(t, t.TempDir())
	ctx := context.Background()
	store, err := eventstore.Open(ctx, nc, eventstore.Config{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	proj, err := projections.Open(t.TempDir(), domain.NewKeyring(testKey), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proj.Close() })
	tr := &trust{proj: proj, store: store}
	store.SetTrust(tr, tr)
	if _, err := store.Introduce(ctx, testKey, "intro", at); err != nil {
		t.Fatal(err)
	}
	if err := proj.CatchUp(ctx, store.Reader, nil); err != nil {
		t.Fatal(err)
	}
	return store, nc
}

func TestOpenNeverCreatesUnlessAllowed(t *testing.T) {
	nc := startNATS(t, t.TempDir())
	if _, err := eventstore.Open(context.Background(), nc, eventstore.Config{}); !errors.Is(err, eventstore.ErrStreamMissing) {
		t.Fatalf("Open without Create on no stream: %v, want ErrStreamMissing", err)
	}
	s, err := eventstore.Open(context.Background(), nc, eventstore.Config{Create: true})
	if err != nil || !s.Created() {
		t.Fatalf("Open with Create: %v, created %v", err, s != nil && s.Created())
	}
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
	if v1.Time.IsZero() || v1.Head == "" {
		t.Fatalf("version after append: %+v", v1)
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
	rep, err := store.Verify(ctx, eventstore.VerifyOptions{Trusted: []domain.PublicKey{testKey.Public()}})
	if err != nil || !rep.OK() || !rep.Anchored {
		t.Fatalf("verify after facts: %+v anchored %v %v", rep.Problems, rep.Anchored, err)
	}
}

// TestEventTimesNeverGoBack: an event decided on a clock behind the one
// that wrote the subject's last event gets that event's time.
func TestEventTimesNeverGoBack(t *testing.T) {
	store, _ := startStore(t)
	ctx := context.Background()
	subj := eventstore.UserSubject("u9")
	v, err := store.Append(ctx, subj, eventstore.Version{}, use("u9", "s", 10))
	if err != nil {
		t.Fatal(err)
	}
	behind := use("u9", "s", 5) // five minutes earlier
	behind.ID = "behind"
	if _, err := store.AppendFacts(ctx, []eventstore.Publication{{Subject: subj, Event: behind}}); err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	if err := store.ReadSubject(ctx, subj, func(r eventstore.Record) error {
		e, err := domain.DecodeEvent(r.Data)
		times = append(times, e.Time)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(times) != 2 || !times[1].Equal(v.Time) {
		t.Fatalf("times on the subject: %v, want the second equal to the first (%s)", times, v.Time)
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
	trusted := []domain.PublicKey{testKey.Public()}
	clean, err := store.Verify(ctx, eventstore.VerifyOptions{Trusted: trusted})
	if err != nil || !clean.OK() || !clean.Anchored || clean.Messages != 11 || clean.Subjects != 3 {
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
		if rehash {                          // as anyone can, without the signing key
			e.Hash, _ = e.ComputeHash()
		}
		r.Data, _ = e.Encode()
		return r
	}
	forge := func(r eventstore.Record) eventstore.Record {
		e, err := domain.DecodeEvent(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		forger, _ := domain.NewSigningKey(bytes.Repeat([]byte{7}, 32))
		e.ID = "forged"
		if err := e.Seal(e.PrevHash, forger); err != nil {
			t.Fatal(err)
		}
		r.Data, _ = e.Encode()
		return r
	}
	stranger, _ := domain.NewSigningKey(bytes.Repeat([]byte{8}, 32))
	// recs[0] introduces the key; then ua and ub alternate.
	cases := []struct {
		name    string
		mutate  func([]eventstore.Record) []eventstore.Record
		pins    map[uint64]eventstore.StreamDigest
		trusted []domain.PublicKey
		seq     uint64
		kind    string
		eventOf int // index into recs of the event named, -1 for none
	}{
		{"verbatim copy", func(r []eventstore.Record) []eventstore.Record { return r }, nil, trusted, 0, "", -1},
		{"altered event", func(r []eventstore.Record) []eventstore.Record { r[5] = alter(r[5], false); return r }, nil, trusted, 6, eventstore.ProblemAltered, 5},
		{"altered and re-hashed event", func(r []eventstore.Record) []eventstore.Record { r[5] = alter(r[5], true); return r }, nil, trusted, 6, eventstore.ProblemSignature, 5},
		{"event inserted by a forger, correctly chained", func(r []eventstore.Record) []eventstore.Record {
			return append(r[:6:6], append([]eventstore.Record{forge(r[7])}, r[6:]...)...)
		}, nil, trusted, 7, eventstore.ProblemSignature, -1},
		{"dropped event", func(r []eventstore.Record) []eventstore.Record { return append(r[:5], r[6:]...) }, nil, trusted, 7, eventstore.ProblemMissing, 7},
		{"two events swapped", func(r []eventstore.Record) []eventstore.Record { r[3], r[5] = r[5], r[3]; return r }, nil, trusted, 4, eventstore.ProblemReordered, 5},
		{"an old event replayed at the end", func(r []eventstore.Record) []eventstore.Record { return append(r, r[3]) }, nil, trusted, 12, eventstore.ProblemReordered, 3},
		{"newest event re-hashed, caught by a pin", func(r []eventstore.Record) []eventstore.Record { r[10] = alter(r[10], true); return r },
			map[uint64]eventstore.StreamDigest{11: clean.Digest}, trusted, 11, eventstore.ProblemPin, -1},
		{"garbage appended", func(r []eventstore.Record) []eventstore.Record {
			return append(r, eventstore.Record{Subject: r[1].Subject, Data: []byte("not an event")})
		}, nil, trusted, 12, eventstore.ProblemCorrupt, -1},
		{"a whole ledger signed by a key the auditor does not trust", func(r []eventstore.Record) []eventstore.Record { return r },
			nil, []domain.PublicKey{stranger.Public()}, 1, eventstore.ProblemSignature, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := copyStream(t, c.mutate)
			rep, err := eventstore.NewReader(s).Verify(ctx, eventstore.VerifyOptions{Pins: c.pins, Trusted: c.trusted})
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

// TestCheckedHistoryPassesOverForgeries: the audit's view of a subject
// judges each message as a projection does, so a forged logout cannot make
// an as-of replay call the session revoked, under either verifier.
func TestCheckedHistoryPassesOverForgeries(t *testing.T) {
	store, nc := startStore(t)
	ctx := context.Background()
	subj := eventstore.UserSubject("u7")
	tokenSession := strings.Repeat("a", 32)
	_, _, hash, _ := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{1}, 64)))
	start := domain.NewUser("u7", "u7@example.com", "h", nil).StartSession(tokenSession, hash, "password", true, false, at, domain.DefaultPolicy())
	start.ID = "start"
	v, err := store.Append(ctx, subj, eventstore.Version{}, start)
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := domain.NewSigningKey(bytes.Repeat([]byte{9}, 32))
	forged := domain.Event{Type: domain.EventSessionLoggedOut, ID: "forged", UserID: "u7", SessionID: tokenSession,
		Time: at.Add(time.Minute), SchemaVersion: domain.SchemaVersion, Payload: []byte(`{}`)}
	if err := forged.Seal(v.Head, forger); err != nil {
		t.Fatal(err)
	}
	forged.KeyID = testKey.ID()
	forged.Hash, _ = forged.ComputeHash()
	data, _ := forged.Encode()
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, subj, data); err != nil {
		t.Fatal(err)
	}
	if _, err := store.AppendFacts(ctx, []eventstore.Publication{{Subject: subj, Event: use("u7", tokenSession, 5)}}); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]domain.Verifier{"keyring": domain.NewKeyring(testKey), "public keys": nil} {
		t.Run(name, func(t *testing.T) {
			r := eventstore.NewReader(store.Stream())
			r.SetVerifier(v)
			history, err := r.CheckedHistory(ctx, subj)
			if err != nil {
				t.Fatal(err)
			}
			var events []domain.Event
			for _, se := range history {
				if se.Err == nil {
					events = append(events, se.Event)
				} else if se.Event.ID != "forged" || !errors.Is(se.Err, eventstore.ErrNotAuthentic) {
					t.Fatalf("message %s judged %v", se.Event.ID, se.Err)
				}
			}
			if len(history) != 3 || len(events) != 2 {
				t.Fatalf("%d messages, %d authentic; want 3 and 2", len(history), len(events))
			}
			a, err := domain.SessionAsOf(events, tokenSession, at.Add(2*time.Minute))
			if err != nil || !a.Verdict.Valid {
				t.Fatalf("as-of after the forged logout: %+v %v, want valid", a.Verdict, err)
			}
		})
	}
}
