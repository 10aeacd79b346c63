package natsauth_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/sessionledger/ledger/eventstore/datakeys"
	"github.com/sessionledger/ledger/eventstore/natsauth"
	ledgerports "github.com/sessionledger/ledger/handlers/ports"
)

const deployDir = "../../deploy/nats"

// deployIdentity is one user of the deploy configuration: its seed file
// (what a client is given) and public key (what site.conf gets).
type deployIdentity struct {
	seedFile, pub string
}

func newDeployIdentity(t *testing.T, dir, name string) deployIdentity {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".nk")
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return deployIdentity{seedFile: path, pub: publicKey(t, kp)}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// siteConf is deploy/nats/site.conf with each variable's value replaced;
// a variable missing from the file fails the test, so the test and the
// shipped file cannot drift apart.
func siteConf(t *testing.T, vars map[string]string) []byte {
	t.Helper()
	site, err := os.ReadFile(filepath.Join(deployDir, "site.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range vars {
		re := regexp.MustCompile(`(?m)^(` + name + `:\s*).*$`)
		if !re.Match(site) {
			t.Fatalf("site.conf does not set %s", name)
		}
		site = re.ReplaceAll(site, []byte("${1}"+strconv.Quote(value)))
	}
	return site
}

// TestDeployCluster runs deploy/nats as shipped (nats.conf as it is,
// site.conf with test values) as three in-process servers, and checks
// what each identity may do over real TLS connections.
func TestDeployCluster(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	pki := newTestPKI(t, filepath.Join(dir, "pki"))
	ledger := newDeployIdentity(t, dir, "ledger")
	reader := newDeployIdentity(t, dir, "reader")
	operator := newDeployIdentity(t, dir, "operator")

	ports := freePorts(t, 6)
	clientPorts, routePorts := ports[:3], ports[3:]
	var servers []*server.Server
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
		for _, s := range servers {
			s.WaitForShutdown()
		}
	})
	for i := range 3 {
		nodeDir := filepath.Join(dir, fmt.Sprintf("node-%d", i+1))
		if err := os.MkdirAll(nodeDir, 0o700); err != nil {
			t.Fatal(err)
		}
		site := siteConf(t, map[string]string{
			"server_name":   fmt.Sprintf("n%d", i+1),
			"CLIENT_LISTEN": fmt.Sprintf("127.0.0.1:%d", clientPorts[i]),
			"ROUTE_LISTEN":  fmt.Sprintf("127.0.0.1:%d", routePorts[i]),
			"ROUTE_1":       fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[0]),
			"ROUTE_2":       fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[1]),
			"ROUTE_3":       fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[2]),
			"JETSTREAM_DIR": filepath.Join(nodeDir, "store"),
			"TLS_CA":        pki.CA,
			"TLS_CERT":      pki.Cert,
			"TLS_KEY":       pki.Key,
			"LEDGER_USER":   ledger.pub,
			"READER_USER":   reader.pub,
			"OPERATOR_USER": operator.pub,
		})
		if err := os.WriteFile(filepath.Join(nodeDir, "site.conf"), site, 0o600); err != nil {
			t.Fatal(err)
		}
		conf, err := os.ReadFile(filepath.Join(deployDir, "nats.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(nodeDir, "nats.conf"), conf, 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(filepath.Join(nodeDir, "nats.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			checkDeployOptions(t, opts, reader.pub)
		}
		opts.NoSigs = true
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
		go s.Start()
	}
	for _, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s not ready", s.Name())
		}
	}
	checkFor(t, 20*time.Second, 25*time.Millisecond, func() error {
		for _, s := range servers {
			if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == 3 {
				return nil
			}
		}
		return errors.New("no JetStream meta leader with all three nodes")
	})

	urls := fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d", clientPorts[0], clientPorts[1], clientPorts[2])
	asUser := func(id deployIdentity, extra ...nats.Option) *nats.Conn {
		return connect(t, urls, natsauth.ClientConfig{NkeyFile: id.seedFile, TLSCA: pki.CA}, extra...)
	}

	// ledger: creates the append-only R3 stream, appends, and reads as the
	// ledger does, on its own inbox prefix.
	var ledgerErrs asyncErrors
	lnc := asUser(ledger, ledgerErrs.option(), nats.CustomInboxPrefix(natsauth.WriterInboxPrefix))
	ljs := newJS(t, lnc)
	cfg := ledgerStreamConfig()
	cfg.Replicas = 3
	var ls jetstream.Stream
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		var err error
		ls, err = ljs.CreateStream(ctx, cfg)
		return err
	})
	const n = 20
	for i := range n {
		if _, err := ljs.Publish(ctx, fmt.Sprintf("ledger.user.u%d", i%4), fmt.Appendf(nil, "event %d", i+1)); err != nil {
			t.Fatal(err)
		}
	}

	pc, err := ls.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Name: "ledger-projection-test", FilterSubject: "ledger.>", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("ledger consumer: %v", err)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		m, err := pc.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			return err
		}
		return m.DoubleAck(ctx)
	})
	if err := ls.DeleteConsumer(ctx, "ledger-projection-test"); err != nil {
		t.Errorf("ledger deletes its consumer: %v", err)
	}
	if m, err := ls.GetMsg(ctx, 1, jetstream.WithGetMsgSubject("ledger.user.u1")); err != nil || m.Sequence != 2 {
		t.Errorf("ledger next message on a subject: %v, %v", m, err)
	}
	if _, err := ljs.Publish(ctx, "ledger.user.u0", []byte("stale"), jetstream.WithExpectLastSequencePerSubject(1)); err == nil {
		t.Error("an append with a stale expected sequence was accepted")
	}

	// reader: reads every message, in order.
	var readerErrs asyncErrors
	rnc := asUser(reader, readerErrs.option())
	rjs := newJS(t, rnc)
	rs, err := rjs.Stream(ctx, "LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	oc, err := rs.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, oc, n)
	for i, m := range got {
		if want := fmt.Sprintf("ledger.user.u%d=event %d", i%4, i+1); m != want {
			t.Fatalf("reader got %q, want %q", m, want)
		}
	}
	if m, err := rs.GetLastMsgForSubject(ctx, "ledger.user.u3"); err != nil || m.Sequence != n {
		t.Errorf("reader GetLastMsgForSubject: %v, %v", m, err)
	}

	// Neither the reader nor the ledger may rewrite history.
	update := cfg
	update.MaxMsgsPerSubject = 1
	mustFail(t, map[string]func(context.Context) error{
		"reader publish": func(ctx context.Context) error {
			_, err := rjs.Publish(ctx, "ledger.user.u0", []byte("forged"))
			return err
		},
		"reader update": func(ctx context.Context) error {
			_, err := rjs.UpdateStream(ctx, update)
			return err
		},
		"ledger update": func(ctx context.Context) error {
			_, err := ljs.UpdateStream(ctx, update)
			return err
		},
		"ledger delete stream": func(ctx context.Context) error { return ljs.DeleteStream(ctx, "LEDGER") },
		"ledger purge":         func(ctx context.Context) error { return ls.Purge(ctx) },
	})
	readerErrs.waitDenied(t, "ledger.user.u0", "$JS.API.STREAM.UPDATE.LEDGER")
	ledgerErrs.waitDenied(t, "$JS.API.STREAM.UPDATE.LEDGER", "$JS.API.STREAM.DELETE.LEDGER", "$JS.API.STREAM.PURGE.LEDGER")

	// ledger: the users' data keys in their own R3 bucket, which it
	// creates, writes and erases from (secure delete); the reader cannot
	// open it.
	var master [32]byte
	master[0] = 1
	var dk *datakeys.Store
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		var err error
		dk, err = datakeys.Open(ctx, lnc, datakeys.Config{Create: true, Replicas: 3, Master: master})
		return err
	})
	sealed, err := dk.Seal(ctx, "u1", "email", []byte("ann@example.com"))
	if err != nil {
		t.Fatalf("ledger seals under a data key: %v", err)
	}
	if err := dk.Destroy(ctx, "u1"); err != nil {
		t.Fatalf("ledger destroys a data key: %v", err)
	}
	if _, err := dk.Open(ctx, "u1", "email", sealed); !errors.Is(err, ledgerports.ErrErased) {
		t.Fatalf("after Destroy: %v", err)
	}
	octx, ocancel := context.WithTimeout(ctx, time.Second)
	if _, err := datakeys.Open(octx, rnc, datakeys.Config{Master: master}); err == nil {
		t.Error("the reader opened the data keys' bucket")
	}
	ocancel()

	// operator: the one who edits the stream.
	ojs := newJS(t, asUser(operator))
	edit := cfg
	edit.Description = "edited by the operator"
	if _, err := ojs.UpdateStream(ctx, edit); err != nil {
		t.Fatalf("operator update: %v", err)
	}
	info, err := ls.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Description != edit.Description || info.State.Msgs != n || !info.Config.DenyDelete || !info.Config.DenyPurge {
		t.Errorf("stream after the operator's edit: %+v / %+v", info.Config, info.State)
	}

	// Refused connections, each explained.
	checkPlainTextRefused(t, fmt.Sprintf("127.0.0.1:%d", clientPorts[0]))
	for name, tc := range map[string]struct {
		opts []nats.Option
		want string
	}{
		"no TLS settings": {nil, "TLS"},
		"unknown CA":      {[]nats.Option{nats.RootCAs(newTestPKI(t, filepath.Join(dir, "other-ca")).CA)}, "TLS"},
		"no identity":     {[]nats.Option{nats.RootCAs(pki.CA)}, "authorization"},
	} {
		nc, err := nats.Connect(urls, append(tc.opts, nats.MaxReconnects(0), nats.Timeout(5*time.Second))...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
			continue
		}
		got := natsauth.Explain(urls, err)
		if !regexp.MustCompile(tc.want).MatchString(got.Error()) || !errors.Is(got, err) {
			t.Errorf("%s: Explain = %v, want it to name %s", name, got, tc.want)
		}
		t.Logf("%s: %v", name, got)
	}
}

// checkPlainTextRefused speaks the NATS protocol without TLS: the server
// announces that TLS is required and never answers the PING.
func checkPlainTextRefused(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("INFO does not require TLS: %s", info)
	}
	if _, err := conn.Write([]byte("CONNECT {}\r\nPING\r\n")); err != nil {
		return // already closed: refused
	}
	if line, err := r.ReadString('\n'); err == nil && strings.HasPrefix(line, "PONG") {
		t.Error("a plain-text client got a PONG")
	}
}

// checkDeployOptions checks the parsed configuration where a running
// cluster cannot show it: the reader's rights are exactly
// ReaderPermissions, and nobody is let in without credentials.
func checkDeployOptions(t *testing.T, opts *server.Options, readerPub string) {
	t.Helper()
	if opts.NoAuthUser != "" {
		t.Errorf("no_auth_user %q: anonymous clients would get in", opts.NoAuthUser)
	}
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("jetstream %v, sync always %v", opts.JetStream, opts.SyncAlways)
	}
	if opts.TLSConfig == nil || opts.Cluster.TLSConfig == nil {
		t.Error("TLS is not configured for clients and routes")
	}
	var users []string
	for _, u := range opts.Nkeys {
		users = append(users, u.Nkey)
		if u.Account == nil || u.Account.Name != "LEDGER" {
			t.Errorf("user %s is not in account LEDGER", u.Nkey)
		}
		if u.Nkey != readerPub {
			continue
		}
		want := natsauth.ReaderPermissions("LEDGER")
		p := u.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil ||
			!sameSet(p.Publish.Allow, want.Publish.Allow) || len(p.Publish.Deny) != 0 ||
			!sameSet(p.Subscribe.Allow, want.Subscribe.Allow) || len(p.Subscribe.Deny) != 0 || p.Response != nil {
			t.Errorf("reader permissions in nats.conf differ from natsauth.ReaderPermissions(\"LEDGER\"):\n conf %+v %+v\n code %+v %+v", p.Publish, p.Subscribe, want.Publish, want.Subscribe)
		}
	}
	if !slices.Contains(users, readerPub) {
		t.Error("the reader is not among the users")
	}
	if len(users) != 3 || len(opts.Users) != 0 {
		t.Errorf("users %q (+%d with passwords), want the three nkey users", users, len(opts.Users))
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
