package embedded

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/sessionledger/ledger/eventstore/natsauth"
)

// Config configures the in-process nats-server.
type Config struct {
	// Dir is where JetStream keeps its files (the stream is the ledger).
	Dir string
	// Listen, if set ("host:port"), lets other processes connect; otherwise
	// the server accepts only in-process connections.
	Listen string
	// SyncAlways fsyncs every write before the ack. Without it JetStream
	// flushes every 2 minutes and a power cut can drop acknowledged logouts.
	SyncAlways bool
	// ServerName distinguishes embedded servers in logs and clusters.
	ServerName string
	// Logger receives the server's own log lines; nil keeps it quiet.
	Logger server.Logger
	// Users, when set (natsauth.Identities.ServerUsers), are the only
	// identities the server admits, on every connection including
	// in-process ones: once it listens, reaching the port is not enough to
	// write to the ledger. Nil keeps the server open to anyone who can
	// connect, which is safe only while it does not listen.
	Users []*server.NkeyUser
	// Identity is the key Connect authenticates with (the writer); it must
	// be one of Users, and is required with them.
	Identity nkeys.KeyPair
}

// Server is a running in-process nats-server with JetStream.
type Server struct {
	srv      *server.Server
	identity nkeys.KeyPair // nil when the server has no users
}

// Start starts nats-server with file-backed JetStream under cfg.Dir
// and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		JetStream:          true,
		StoreDir:           filepath.Clean(cfg.Dir),
		SyncAlways:         cfg.SyncAlways,
		NoSigs:             true,
		DontListen:         cfg.Listen == "",
		MaxPayload:         1 << 20,
		JetStreamMaxMemory: 64 << 20,
	}
	if opts.ServerName == "" {
		opts.ServerName = "ledger-embedded"
	}
	if err := checkIdentity(cfg); err != nil {
		return nil, err
	}
	if len(cfg.Users) > 0 {
		opts.Nkeys = cfg.Users
		// With a no_auth_user a client without credentials would be let in
		// as that user; there must be no such fallback.
		opts.NoAuthUser = ""
	}
	if cfg.Listen != "" {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
		}
		if port == 0 {
			port = server.RANDOM_PORT // ":0" means any free port, as with net.Listen
		}
		opts.Host, opts.Port = host, port
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if cfg.Logger != nil {
		srv.SetLoggerV2(cfg.Logger, false, false, false)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after 30s (is the data dir in use by another process?)")
	}
	return &Server{srv: srv, identity: cfg.Identity}, nil
}

// checkIdentity refuses a configuration whose own connections would be
// turned away, so the mistake shows at start rather than as an
// authorization error on the first Connect.
func checkIdentity(cfg Config) error {
	if len(cfg.Users) == 0 {
		if cfg.Identity != nil {
			return errors.New("embedded nats: Identity is set but Users is not; the server would not check it")
		}
		return nil
	}
	if cfg.Identity == nil {
		return errors.New("embedded nats: Users is set but Identity is not; the ledger could not connect to its own server")
	}
	pub, err := cfg.Identity.PublicKey()
	if err != nil {
		return fmt.Errorf("embedded nats: identity: %w", err)
	}
	if !slices.ContainsFunc(cfg.Users, func(u *server.NkeyUser) bool { return u != nil && u.Nkey == pub }) {
		return fmt.Errorf("embedded nats: identity %s is not one of the server's users", pub)
	}
	return nil
}

// Connect opens a client connection that does not leave the process, as
// the configured Identity when the server has users. That connection
// receives replies under natsauth.WriterInboxPrefix, out of sight of
// readers subscribed to _INBOX.>.
func (e *Server) Connect(name string) (*nats.Conn, error) {
	if e.identity == nil {
		return e.connect(name)
	}
	return e.connect(name, identityOption(e.identity), nats.CustomInboxPrefix(natsauth.WriterInboxPrefix))
}

// ConnectAs opens an in-process connection as kp, whatever its rights, or
// without credentials when kp is nil: for tests of what each identity may
// do. A refused in-process connection usually fails only at the server's
// write deadline (10s), with a closed-pipe error rather than the
// authorization error TCP gives: client and server can both be writing
// (PING, -ERR) on the synchronous pipe.
func (e *Server) ConnectAs(name string, kp nkeys.KeyPair) (*nats.Conn, error) {
	if kp == nil {
		return e.connect(name)
	}
	return e.connect(name, identityOption(kp))
}

func (e *Server) connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(e.srv), nats.Name(name), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, natsauth.Explain("in-process", fmt.Errorf("connect embedded nats: %w", err))
	}
	return nc, nil
}

// identityOption authenticates as kp by signing the server's nonce; the
// seed stays inside kp.
func identityOption(kp nkeys.KeyPair) nats.Option {
	pub, err := kp.PublicKey()
	if err != nil {
		return func(*nats.Options) error { return fmt.Errorf("nats identity: %w", err) }
	}
	return nats.Nkey(pub, kp.Sign)
}

// ClientURL is the address other processes use when Listen was set.
func (e *Server) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for JetStream to close its files.
func (e *Server) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
