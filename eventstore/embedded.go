package eventstore

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the in-process nats-server.
type EmbeddedConfig struct {
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
}

// Embedded is a running in-process nats-server with JetStream.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts nats-server with file-backed JetStream under cfg.Dir
// and waits until it accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
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
	return &Embedded{srv: srv}, nil
}

// Connect opens a client connection that does not leave the process.
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(e.srv), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect embedded nats: %w", err)
	}
	return nc, nil
}

// ClientURL is the address other processes use when Listen was set.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for JetStream to close its files.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
