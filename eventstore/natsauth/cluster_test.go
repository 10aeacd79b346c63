package natsauth_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/eventstore/natsauth"
)

// The in-process dev/test cluster with users: routes still form (they
// authenticate among themselves), clients need an nkey.
func TestLocalClusterWithUsers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	ids, err := natsauth.LoadOrCreate(filepath.Join(dir, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := embedded.StartCluster(embedded.ClusterConfig{
		Name: "authtest", Dir: filepath.Join(dir, "cluster"), Nodes: 3, Users: ids.ServerUsers("LEDGER"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)

	_, err = nats.Connect(c.URLs(), nats.MaxReconnects(0), nats.Timeout(5*time.Second))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client: %v, want an authorization error", err)
	}

	wjs := newJS(t, connect(t, c.URLs(), natsauth.ClientConfig{NkeyFile: ids.WriterFile}))
	cfg := ledgerStreamConfig()
	cfg.Replicas = 3
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		_, err := wjs.CreateStream(ctx, cfg)
		return err
	})
	if _, err := wjs.Publish(ctx, "ledger.user.a", []byte("e1")); err != nil {
		t.Fatal(err)
	}

	var readerErrs asyncErrors
	rjs := newJS(t, connect(t, c.ClientURL(2), natsauth.ClientConfig{NkeyFile: ids.ReaderFile}, readerErrs.option()))
	rs, err := rjs.Stream(ctx, "LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := rs.GetLastMsgForSubject(ctx, "ledger.user.a"); err != nil || string(m.Data) != "e1" {
		t.Fatalf("reader: %v, %v", m, err)
	}
	mustFail(t, map[string]func(context.Context) error{
		"reader publish": func(ctx context.Context) error {
			_, err := rjs.Publish(ctx, "ledger.user.a", []byte("forged"))
			return err
		},
	})
	readerErrs.waitDenied(t, "ledger.user.a")
	if info, err := rs.Info(ctx, jetstream.WithSubjectFilter("ledger.>")); err != nil || info.State.Msgs != 1 {
		t.Errorf("stream after the reader's attempt: %+v, %v", info, err)
	}
}
