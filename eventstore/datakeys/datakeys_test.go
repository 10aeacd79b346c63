package datakeys_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/ledger/eventstore/datakeys"
	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/eventstore/natsauth"
	"github.com/sessionledger/ledger/handlers/ports"
)

type server struct {
	emb *embedded.Server
	ids *natsauth.Identities
	dir string
}

func start(t *testing.T) server {
	t.Helper()
	dir := t.TempDir()
	ids, err := natsauth.LoadOrCreate(filepath.Join(dir, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	emb, err := embedded.Start(embedded.Config{Dir: filepath.Join(dir, "js"), Users: ids.ServerUsers("LEDGER"), Identity: ids.Writer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	return server{emb: emb, ids: ids, dir: dir}
}

func (s server) writer(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := s.emb.Connect("test-writer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func masterKey(t *testing.T) [32]byte {
	t.Helper()
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return k
}

func open(t *testing.T, nc *nats.Conn, master [32]byte, ttl time.Duration) *datakeys.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := datakeys.Open(ctx, nc, datakeys.Config{Create: true, Master: master, CacheTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpenRoundTrip(t *testing.T) {
	ctx := context.Background()
	srv := start(t)
	master := masterKey(t)
	s := open(t, srv.writer(t), master, time.Minute)
	const user = "01a20403-8474-7a9f-b6fd-2b62d6ec2bb3"
	sealed, err := s.Seal(ctx, user, "email", []byte("ann@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sealed, "v1.") || strings.Contains(sealed, "ann") {
		t.Fatalf("sealed = %q", sealed)
	}
	again, _ := s.Seal(ctx, user, "email", []byte("ann@example.com"))
	if again == sealed {
		t.Fatal("two seals of one value are equal: the nonce is not fresh")
	}
	got, err := s.Open(ctx, user, "email", sealed)
	if err != nil || string(got) != "ann@example.com" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// A second instance (no cache) with the same master key reads it.
	other := open(t, srv.writer(t), master, time.Minute)
	if got, err := other.Open(ctx, user, "email", sealed); err != nil || string(got) != "ann@example.com" {
		t.Fatalf("second instance: Open = %q, %v", got, err)
	}
	// Moved to another user or purpose, it does not open.
	if _, err := s.Seal(ctx, "bob", "email", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, "bob", "email", sealed); err == nil {
		t.Fatal("another user's sealed value opened")
	}
	if _, err := s.Open(ctx, user, "totp", sealed); err == nil {
		t.Fatal("a sealed value opened for another purpose")
	}
	if _, err := s.Open(ctx, "nobody", "email", sealed); err == nil || errors.Is(err, ports.ErrErased) {
		t.Fatalf("user without a key: %v, want an error that is not ErrErased", err)
	}
	if _, err := s.Open(ctx, user, "email", "v1.AAAA"); err == nil {
		t.Fatal("garbage opened")
	}
	if _, err := s.Seal(ctx, "../x", "email", nil); err == nil {
		t.Fatal("a malformed user id was accepted as a key name")
	}
}

func TestWrongMasterKeyRefused(t *testing.T) {
	srv := start(t)
	open(t, srv.writer(t), masterKey(t), time.Minute)
	_, err := datakeys.Open(context.Background(), srv.writer(t), datakeys.Config{Master: masterKey(t)})
	if !errors.Is(err, datakeys.ErrWrongMasterKey) || !strings.Contains(err.Error(), "--master-key-file") {
		t.Fatalf("Open with another master key: %v", err)
	}
}

// TestDestroy: after Destroy, Seal and Open fail with ErrErased on the
// destroying instance at once, and on another instance (which had the key
// cached) once its cache TTL has passed; a new key is never drawn.
func TestDestroy(t *testing.T) {
	ctx := context.Background()
	srv := start(t)
	master := masterKey(t)
	const ttl = 300 * time.Millisecond
	a := open(t, srv.writer(t), master, ttl)
	b := open(t, srv.writer(t), master, ttl)
	sealed, err := a.Seal(ctx, "u1", "email", []byte("ann@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(ctx, "u1", "email", sealed); err != nil { // b caches the key
		t.Fatal(err)
	}
	kept, err := a.Seal(ctx, "u2", "email", []byte("bob@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Destroy(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Open(ctx, "u1", "email", sealed); !errors.Is(err, ports.ErrErased) {
		t.Fatalf("Open after Destroy = %v, want ErrErased", err)
	}
	if _, err := a.Seal(ctx, "u1", "email", []byte("x")); !errors.Is(err, ports.ErrErased) {
		t.Fatalf("Seal after Destroy = %v, want ErrErased", err)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	if _, err := b.Open(ctx, "u1", "email", sealed); !errors.Is(err, ports.ErrErased) {
		t.Fatalf("other instance after its TTL: Open = %v, want ErrErased", err)
	}
	c := open(t, srv.writer(t), master, ttl) // a fresh instance
	if _, err := c.Seal(ctx, "u1", "totp", []byte("x")); !errors.Is(err, ports.ErrErased) {
		t.Fatalf("fresh instance: Seal = %v, want ErrErased", err)
	}
	// Idempotent, and for a user who never had a key too.
	if err := b.Destroy(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Destroy(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Seal(ctx, "never", "email", []byte("x")); !errors.Is(err, ports.ErrErased) {
		t.Fatalf("Seal for a user destroyed before any key: %v", err)
	}
	// Others are untouched.
	if got, err := c.Open(ctx, "u2", "email", kept); err != nil || string(got) != "bob@example.com" {
		t.Fatalf("u2 after u1's erasure: %q, %v", got, err)
	}
}

// TestWrappedAtRest: what the bucket holds is the wrapped key, never the
// raw one (which would decrypt the user's values), and after Destroy the
// bucket's files no longer hold even the wrapped one.
func TestWrappedAtRest(t *testing.T) {
	ctx := context.Background()
	srv := start(t)
	nc := srv.writer(t)
	master := masterKey(t)
	s := open(t, nc, master, time.Minute)
	sealed, err := s.Seal(ctx, "u1", "email", []byte("ann@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, datakeys.StreamName(""))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "$KV."+datakeys.DefaultBucket+".user.u1")
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Data) < 32+16 {
		t.Fatalf("stored value of %d bytes", len(msg.Data))
	}
	// The stored bytes do not open the sealed value at any offset.
	for i := 0; i+32 <= len(msg.Data); i++ {
		if opensWith(t, msg.Data[i:i+32], "u1", "email", sealed) {
			t.Fatalf("the bucket holds the raw data key at offset %d", i)
		}
	}
	// On disk before (else the check after proves nothing), gone after.
	deadline := time.Now().Add(5 * time.Second)
	for len(filesHolding(t, filepath.Join(srv.dir, "js"), msg.Data)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the wrapped key never reached the bucket's files")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.Destroy(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if files := filesHolding(t, filepath.Join(srv.dir, "js"), msg.Data); len(files) > 0 {
		t.Errorf("after Destroy, %v still hold the wrapped key", files)
	}
}

func filesHolding(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, needle) {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// opensWith reports whether key, taken as a raw data key, opens sealed.
func opensWith(t *testing.T, key []byte, userID, purpose, sealed string) bool {
	t.Helper()
	return datakeys.OpenWithRawKey(key, userID, purpose, sealed) == nil
}

// TestReaderCannotReadBucket: the read-only identity, which may read the
// ledger stream, gets nothing from the data keys' bucket.
func TestReaderCannotReadBucket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := start(t)
	s := open(t, srv.writer(t), masterKey(t), time.Minute)
	if _, err := s.Seal(ctx, "u1", "email", []byte("ann@example.com")); err != nil {
		t.Fatal(err)
	}
	reader, err := srv.emb.ConnectAs("test-reader", srv.ids.Reader)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	js, err := jetstream.New(reader)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer scancel()
	if _, err := js.Stream(sctx, datakeys.StreamName("")); err == nil {
		t.Error("the reader got the bucket's stream info")
	}
	// Straight at the API, whatever a client library does.
	for _, subj := range []string{
		"$JS.API.STREAM.MSG.GET." + datakeys.StreamName(""),
		"$JS.API.DIRECT.GET." + datakeys.StreamName("") + ".$KV." + datakeys.DefaultBucket + ".user.u1",
		"$JS.API.CONSUMER.CREATE." + datakeys.StreamName(""),
	} {
		rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		msg, err := reader.RequestWithContext(rctx, subj, []byte(`{"last_by_subj":"$KV.LEDGER_DATAKEYS.user.u1"}`))
		rcancel()
		if err == nil && len(msg.Data) > 0 && !bytes.Contains(msg.Data, []byte("error")) {
			t.Errorf("reader %s answered: %s", subj, msg.Data)
		}
	}
	octx, ocancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer ocancel()
	if _, err := datakeys.Open(octx, reader, datakeys.Config{Master: masterKey(t)}); err == nil {
		t.Error("the reader opened the bucket")
	}
}

func TestMasterKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	k, created, err := keyfile.LoadOrCreateMasterKey(path, true)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	again, created, err := keyfile.LoadOrCreateMasterKey(path, true)
	if err != nil || created || again != k {
		t.Fatalf("load: %v %v", created, err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := keyfile.LoadMasterKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable master key: %v", err)
	}
	if _, _, err := keyfile.LoadOrCreateMasterKey(filepath.Join(dir, "missing"), false); err == nil {
		t.Fatal("a missing key without create was not an error")
	}
}
