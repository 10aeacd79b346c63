package natsauth_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/eventstore/natsauth"
)

func ledgerStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: "LEDGER", Subjects: []string{"ledger.>"}, Storage: jetstream.FileStorage,
		DenyDelete: true, DenyPurge: true,
	}
}

func connect(t *testing.T, url string, cc natsauth.ClientConfig, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts, err := cc.Options()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(append(opts, nats.MaxReconnects(0), nats.Timeout(5*time.Second)), extra...)...)
	if err != nil {
		t.Fatal(natsauth.Explain(url, err))
	}
	t.Cleanup(nc.Close)
	return nc
}

// readAll reads n messages ("subject=data") through an ordered consumer.
// A fetch can fail while the consumer it just made is not yet known on
// every node (no responders); the ordered consumer then resumes after the
// last message it delivered, so retrying keeps order and loses nothing.
func readAll(t *testing.T, oc jetstream.Consumer, n int) []string {
	t.Helper()
	var got []string
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		for len(got) < n {
			batch, err := oc.Fetch(n-len(got), jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				return err
			}
			for m := range batch.Messages() {
				got = append(got, m.Subject()+"="+string(m.Data()))
			}
			if err := batch.Error(); err != nil {
				return err
			}
		}
		return nil
	})
	return got
}

func newJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// startAuthServer runs an embedded server that admits only a fresh set of
// identities (kept in dir), listening on a loopback port if listen.
func startAuthServer(t *testing.T, dir string, listen bool) (*embedded.Server, *natsauth.Identities) {
	t.Helper()
	ids, err := natsauth.LoadOrCreate(filepath.Join(dir, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := embedded.Config{Dir: filepath.Join(dir, "js"), Users: ids.ServerUsers("LEDGER"), Identity: ids.Writer}
	if listen {
		cfg.Listen = "127.0.0.1:0"
	}
	emb, err := embedded.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	return emb, ids
}

func TestEmbeddedAccessControl(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emb, ids := startAuthServer(t, t.TempDir(), true)
	url := emb.ClientURL()

	// Nobody gets in without a known key, over TCP or in process.
	_, err := nats.Connect(url, nats.MaxReconnects(0), nats.Timeout(5*time.Second))
	if err == nil {
		t.Fatal("anonymous TCP client connected")
	}
	if explained := natsauth.Explain(url, err); !errors.Is(explained, nats.ErrAuthorization) || !strings.Contains(explained.Error(), "authorization") {
		t.Errorf("anonymous: Explain = %v, want it to name authorization and wrap nats.ErrAuthorization", explained)
	}
	// The writer, over TCP with its seed file, creates the stream and appends.
	writer := connect(t, url, natsauth.ClientConfig{NkeyFile: ids.WriterFile})
	wjs := newJS(t, writer)
	if _, err := wjs.CreateStream(ctx, ledgerStreamConfig()); err != nil {
		t.Fatal(err)
	}
	subjects := []string{"ledger.user.a", "ledger.user.b", "ledger.user.a", "ledger.email.h", "ledger.anon"}
	for i, s := range subjects {
		if _, err := wjs.Publish(ctx, s, fmt.Appendf(nil, "event %d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	// A consumer of the ledger's own, whose name the reader must not learn
	// or be able to delete.
	if _, err := wjs.CreateOrUpdateConsumer(ctx, "LEDGER", jetstream.ConsumerConfig{
		Name: "ledger-projection-secret", AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}

	// The reader reads everything, by every path a reader uses.
	var readerErrs asyncErrors
	reader := connect(t, url, natsauth.ClientConfig{NkeyFile: ids.ReaderFile}, readerErrs.option())
	rjs := newJS(t, reader)
	if _, err := rjs.AccountInfo(ctx); err != nil {
		t.Errorf("reader account info: %v", err)
	}
	rs, err := rjs.Stream(ctx, "LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	info, err := rs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(subjects)) {
		t.Fatalf("reader sees %d messages, want %d", info.State.Msgs, len(subjects))
	}
	oc, err := rs.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, oc, len(subjects))
	for i, s := range subjects {
		if want := fmt.Sprintf("%s=event %d", s, i+1); got[i] != want {
			t.Errorf("message %d = %q, want %q", i+1, got[i], want)
		}
	}
	if m, err := rs.GetMsg(ctx, 2); err != nil || m.Subject != "ledger.user.b" {
		t.Errorf("GetMsg(2) = %v, %v", m, err)
	}
	if m, err := rs.GetLastMsgForSubject(ctx, "ledger.user.a"); err != nil || m.Sequence != 3 {
		t.Errorf("GetLastMsgForSubject = %v, %v", m, err)
	}
	// A pull consumer with explicit acks, as the nats CLI's stream view uses.
	pc, err := rs.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "ledger.user.>", InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	m, err := pc.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Errorf("reader ack: %v", err)
	}
	if ci, err := pc.Info(ctx); err != nil || ci.AckFloor.Stream != 1 {
		t.Errorf("reader's consumer after ack: %+v, %v", ci, err)
	}

	// ... and changes nothing.
	sub, err := reader.SubscribeSync("ledger.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	mustFail(t, map[string]func(context.Context) error{
		"publish on ledger.user.x": func(ctx context.Context) error {
			_, err := rjs.Publish(ctx, "ledger.user.x", []byte("forged"))
			return err
		},
		"update stream": func(ctx context.Context) error {
			cfg := ledgerStreamConfig()
			cfg.MaxMsgsPerSubject = 1
			_, err := rjs.UpdateStream(ctx, cfg)
			return err
		},
		"delete stream": func(ctx context.Context) error { return rjs.DeleteStream(ctx, "LEDGER") },
		"purge":         func(ctx context.Context) error { return rs.Purge(ctx) },
		"delete msg":    func(ctx context.Context) error { return rs.DeleteMsg(ctx, 1) },
		"delete consumer": func(ctx context.Context) error {
			return rs.DeleteConsumer(ctx, "ledger-projection-secret")
		},
		"list consumers": func(ctx context.Context) error {
			l := rs.ListConsumers(ctx)
			for range l.Info() {
			}
			return l.Err()
		},
		"consumer names": func(ctx context.Context) error {
			l := rs.ConsumerNames(ctx)
			for range l.Name() {
			}
			return l.Err()
		},
		"create another stream": func(ctx context.Context) error {
			_, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}})
			return err
		},
	})
	readerErrs.waitDenied(t,
		"ledger.user.x", "ledger.>",
		"$JS.API.STREAM.UPDATE.LEDGER", "$JS.API.STREAM.DELETE.LEDGER", "$JS.API.STREAM.PURGE.LEDGER",
		"$JS.API.STREAM.MSG.DELETE.LEDGER", "$JS.API.CONSUMER.DELETE.LEDGER.ledger-projection-secret",
		"$JS.API.CONSUMER.LIST.LEDGER", "$JS.API.CONSUMER.NAMES.LEDGER", "$JS.API.STREAM.CREATE.OTHER")

	// The writer sees the stream as it left it.
	ws, err := wjs.Stream(ctx, "LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	info, err = ws.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(subjects)) || info.State.LastSeq != uint64(len(subjects)) || info.Config.MaxMsgsPerSubject > 0 {
		t.Errorf("stream changed by the reader: state %+v, max msgs per subject %d", info.State, info.Config.MaxMsgsPerSubject)
	}
	if _, err := ws.Consumer(ctx, "ledger-projection-secret"); err != nil {
		t.Errorf("the ledger's consumer: %v", err)
	}
	if _, err := wjs.Stream(ctx, "OTHER"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream OTHER: %v, want not found", err)
	}
}

// A reader may subscribe to _INBOX.>; the ledger's own in-process
// connection answers under WriterInboxPrefix, so the reader does not see
// its replies (which would name its consumers), while it would see those
// of a client on the default prefix.
func TestReaderDoesNotSeeLedgerReplies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emb, ids := startAuthServer(t, t.TempDir(), true)

	reader := connect(t, emb.ClientURL(), natsauth.ClientConfig{NkeyFile: ids.ReaderFile})
	var seen atomic.Int64
	if _, err := reader.Subscribe("_INBOX.>", func(*nats.Msg) { seen.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := reader.Flush(); err != nil {
		t.Fatal(err)
	}

	ledger, err := emb.Connect("ledger")
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()
	if _, err := newJS(t, ledger).CreateStream(ctx, ledgerStreamConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := newJS(t, ledger).Publish(ctx, "ledger.user.a", []byte("e")); err != nil {
		t.Fatal(err)
	}
	if err := reader.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := seen.Load(); n != 0 {
		t.Fatalf("reader saw %d replies meant for the ledger", n)
	}

	// Control: a writer on the default prefix is visible, so the check
	// above is not vacuous.
	other, err := emb.ConnectAs("default-prefix", ids.Writer)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := newJS(t, other).AccountInfo(ctx); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if seen.Load() == 0 {
			return errors.New("reader saw no reply on _INBOX.>")
		}
		return nil
	})
}

// In-process connections are checked like any other. A refused one
// usually fails only at the server's write deadline (10s), so this runs in
// parallel with the other slow tests.
func TestEmbeddedInProcessNeedsIdentity(t *testing.T) {
	t.Parallel()
	emb, ids := startAuthServer(t, t.TempDir(), false)
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 2)
	for _, kp := range []nkeys.KeyPair{nil, stranger} {
		go func() {
			nc, err := emb.ConnectAs("intruder", kp)
			if err == nil {
				nc.Close()
			}
			refused <- err
		}()
	}
	for range 2 {
		if err := <-refused; err == nil {
			t.Error("an in-process client without a known nkey connected")
		}
	}
	for _, kp := range []nkeys.KeyPair{ids.Writer, ids.Reader} {
		nc, err := emb.ConnectAs("known", kp)
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
}

func TestEmbeddedIdentityChecks(t *testing.T) {
	ids, err := natsauth.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]embedded.Config{
		"users without identity":  {Users: ids.ServerUsers("LEDGER")},
		"identity without users":  {Identity: ids.Writer},
		"identity not among them": {Users: ids.ServerUsers("LEDGER"), Identity: stranger},
	} {
		cfg.Dir = t.TempDir()
		if emb, err := embedded.Start(cfg); err == nil {
			emb.Shutdown()
			t.Errorf("%s: started", name)
		}
	}

	// Without users the server is as before: open to in-process clients.
	emb, err := embedded.Start(embedded.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	nc, err := emb.Connect("anon")
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

// A reader may create push consumers, and the server does not check the
// deliver subject against the creator's rights. Pointing one at the
// JetStream API must not let a reader act through the server. (The API is
// a service imported into the account, not a subscription in it, so the
// consumer sees no interest there and delivers nothing; the test checks
// the effect, not that mechanism.)
func TestReaderPushConsumerCannotReachTheAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emb, ids := startAuthServer(t, t.TempDir(), false)
	ledger, err := emb.Connect("ledger")
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()
	wjs := newJS(t, ledger)
	ws, err := wjs.CreateStream(ctx, ledgerStreamConfig())
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	for range n {
		if _, err := wjs.Publish(ctx, "ledger.user.a", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ws.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Name: "ledger-projection-secret", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}

	rnc, err := emb.ConnectAs("reader", ids.Reader)
	if err != nil {
		t.Fatal(err)
	}
	defer rnc.Close()
	rjs := newJS(t, rnc)
	targets := []string{
		"$JS.API.STREAM.DELETE.LEDGER",
		"$JS.API.STREAM.PURGE.LEDGER",
		"$JS.API.STREAM.UPDATE.LEDGER",
		"$JS.API.STREAM.MSG.DELETE.LEDGER",
		"$JS.API.CONSUMER.DELETE.LEDGER.ledger-projection-secret",
	}
	var created []string
	for i, target := range targets {
		name := fmt.Sprintf("push-%d", i)
		_, err := rjs.CreatePushConsumer(ctx, "LEDGER", jetstream.ConsumerConfig{
			Name: name, DeliverSubject: target, AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute,
		})
		if err == nil {
			created = append(created, name)
		}
	}
	// A delivery back into the stream's own subjects is refused outright.
	if _, err := rjs.CreatePushConsumer(ctx, "LEDGER", jetstream.ConsumerConfig{DeliverSubject: "ledger.user.x", AckPolicy: jetstream.AckNonePolicy}); err == nil {
		t.Error("push consumer delivering into ledger.> was created")
	}
	// A control consumer delivering to the reader's own inbox: once it has
	// delivered everything, the others have had the same chance to.
	inbox := rnc.NewInbox()
	var got atomic.Int64
	if _, err := rnc.Subscribe(inbox, func(*nats.Msg) { got.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.CreatePushConsumer(ctx, "LEDGER", jetstream.ConsumerConfig{Name: "control", DeliverSubject: inbox, AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if g := got.Load(); g < n {
			return fmt.Errorf("control consumer delivered %d of %d", g, n)
		}
		return nil
	})
	for _, name := range created {
		if c, err := rjs.PushConsumer(ctx, "LEDGER", name); err == nil {
			t.Logf("%s -> %s: delivered up to %d", name, c.CachedInfo().Config.DeliverSubject, c.CachedInfo().Delivered.Stream)
		}
	}
	info, err := ws.Info(ctx)
	if err != nil {
		t.Fatalf("stream after deliveries into the API: %v", err)
	}
	if info.State.Msgs != n || info.State.FirstSeq != 1 {
		t.Errorf("stream state %+v, want %d messages from 1", info.State, n)
	}
	if _, err := ws.Consumer(ctx, "ledger-projection-secret"); err != nil {
		t.Errorf("the ledger's consumer: %v", err)
	}
}
