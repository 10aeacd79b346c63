package eventstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/embedded"
)

// TestCheckStreamFindsTampering changes the stream the ways JetStream
// allows despite deny_delete/deny_purge, and checks each is named.
func TestCheckStreamFindsTampering(t *testing.T) {
	dir := t.TempDir()
	emb, err := embedded.Start(embedded.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	stream, err := js.CreateStream(ctx, eventstore.StreamConfig(eventstore.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"ledger.user.a", "ledger.user.a", "ledger.user.b"} {
		if _, err := js.Publish(ctx, subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	created := info.Created
	expect := func(t *testing.T, applied uint64, want ...string) {
		t.Helper()
		findings, _, err := eventstore.NewReader(stream).CheckStream(ctx, eventstore.StreamExpectations{Applied: applied, Created: created})
		if err != nil {
			t.Fatal(err)
		}
		all := strings.Join(findings, "; ")
		if len(want) == 0 && len(findings) > 0 {
			t.Fatalf("intact stream: findings %q", all)
		}
		for _, w := range want {
			if !strings.Contains(all, w) {
				t.Fatalf("findings %q do not mention %q", all, w)
			}
		}
	}
	expect(t, 3)
	expect(t, 4, "last sequence is 3, but this instance has applied up to 4")

	// The creation time survives a restart of the server, so a changed one
	// really means a new stream.
	nc.Close()
	emb.Shutdown()
	if emb, err = embedded.Start(embedded.Config{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	if nc, err = emb.Connect("test"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ = jetstream.New(nc)
	if stream, err = js.Stream(ctx, eventstore.DefaultStream); err != nil {
		t.Fatal(err)
	}
	expect(t, 3)

	cfg := stream.CachedInfo().Config
	cfg.MaxMsgsPerSubject = 1
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	expect(t, 3, "max_msgs_per_subject is 1", "removed")
	cfg.Sealed = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	expect(t, 3, "sealed")
	if err := js.DeleteStream(ctx, eventstore.DefaultStream); err != nil {
		t.Fatal(err)
	}
	expect(t, 3, "does not exist")
	if stream, err = js.CreateStream(ctx, eventstore.StreamConfig(eventstore.Config{})); err != nil {
		t.Fatal(err)
	}
	expect(t, 0, "deleted and created again")
}

// TestDigestWindowDetectsRewrittenHistory: a stream re-created with
// different content under the same sequences fails the recorded digest.
func TestDigestWindowDetectsRewrittenHistory(t *testing.T) {
	nc := startNATS(t, t.TempDir())
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	fill := func(body string) jetstream.Stream {
		s, err := js.CreateStream(ctx, eventstore.StreamConfig(eventstore.Config{}))
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if _, err := js.Publish(ctx, "ledger.user.a", []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	s := fill("original")
	var d eventstore.StreamDigest
	if err := eventstore.NewReader(s).Read(ctx, eventstore.ReadOptions{}, func(r eventstore.Record) error { d = d.Next(r); return nil }); err != nil {
		t.Fatal(err)
	}
	cp := eventstore.Checkpoint{Seq: 5, Digest: d}
	if err := eventstore.NewReader(s).CheckDigestWindow(ctx, eventstore.Checkpoint{}, cp); err != nil {
		t.Fatalf("intact window: %v", err)
	}
	if err := js.DeleteStream(ctx, eventstore.DefaultStream); err != nil {
		t.Fatal(err)
	}
	s = fill("rewritten")
	if err := eventstore.NewReader(s).CheckDigestWindow(ctx, eventstore.Checkpoint{}, cp); !errors.Is(err, eventstore.ErrStreamTampered) {
		t.Fatalf("rewritten window: %v, want ErrStreamTampered", err)
	}
}
