package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/eventstore/natsauth"
)

// ledgerLog is an open connection to the stream, embedded or external.
type ledgerLog struct {
	emb    *embedded.Server
	nc     *nats.Conn
	store  *eventstore.Store
	read   *eventstore.Reader // the projection's source: store, or a mirror of it
	dial   func() (*nats.Conn, error)
	unlock func()
	closed sync.Once
}

// openLog connects to NATS. The data dir is locked for as long as the log
// is open when the embedded server keeps its files there, or when the
// caller says it will use the projection there too. The embedded server
// accepts only the identities it keeps in <data-dir>/nats (writer.nk,
// reader.nk); the ledger itself connects as the writer.
func openLog(ctx context.Context, cfg LogConfig, log *slog.Logger, usesDataDir bool) (*ledgerLog, error) {
	l := &ledgerLog{}
	if cfg.NATSURL == "" || usesDataDir {
		unlock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		l.unlock = unlock
	}
	if cfg.NATSURL == "" {
		natsDir := filepath.Join(cfg.DataDir, "nats")
		ids, err := natsauth.LoadOrCreate(natsDir)
		if err != nil {
			l.close()
			return nil, err
		}
		emb, err := embedded.Start(embedded.Config{
			Dir:        natsDir,
			Listen:     cfg.NATSListen,
			SyncAlways: !cfg.NoSync,
			Users:      ids.ServerUsers(streamName(cfg)),
			Identity:   ids.Writer,
		})
		if err != nil {
			l.close()
			return nil, err
		}
		l.emb = emb
		l.dial = func() (*nats.Conn, error) { return emb.Connect("ledger") }
		if cfg.NATSListen != "" {
			log.Info("embedded NATS accepts connections (nkey authentication only)", "url", emb.ClientURL(),
				"writer", ids.WriterFile, "reader", ids.ReaderFile)
		}
	} else {
		if err := cfg.NATS.Validate(); err != nil {
			l.close()
			return nil, err
		}
		auth, err := cfg.NATS.Options()
		if err != nil {
			l.close()
			return nil, err
		}
		urls := cfg.NATSURL
		opts := append([]nats.Option{nats.Name("ledger"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
			nats.ErrorHandler(asyncErrors(log))}, auth...)
		if usesDataDir {
			// An instance's replies name its consumers; keep them off
			// _INBOX.>, which the read-only identity may subscribe to.
			// (Audit commands, which may run as the reader, keep the
			// default: the reader may subscribe only there.)
			opts = append(opts, nats.CustomInboxPrefix(natsauth.WriterInboxPrefix))
		}
		l.dial = func() (*nats.Conn, error) {
			nc, err := nats.Connect(urls, opts...)
			if err != nil {
				return nil, natsauth.Explain(urls, err)
			}
			return nc, nil
		}
	}
	nc, err := l.dial()
	if err != nil {
		l.close()
		return nil, err
	}
	l.nc = nc
	return l, nil
}

// asyncErrors logs what NATS reports outside any call. A read-only identity
// may not delete the short-lived consumers reads leave behind (they expire
// by themselves), so those refusals are not worth a warning.
func asyncErrors(log *slog.Logger) nats.ErrHandler {
	return func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "CONSUMER.DELETE") {
			log.Debug("nats: consumer cleanup not permitted for this identity", "err", err)
			return
		}
		log.Warn("nats", "err", err)
	}
}

func streamName(cfg LogConfig) string {
	if cfg.Stream == "" {
		return eventstore.DefaultStream
	}
	return cfg.Stream
}

// openStore opens the ledger stream (creating it only if create) and the
// stream the projection follows.
func (l *ledgerLog) openStore(ctx context.Context, cfg LogConfig, create bool) error {
	replicas := streamReplicas(cfg, l.nc)
	var err error
	l.store, err = eventstore.Open(ctx, l.nc, eventstore.Config{Stream: cfg.Stream, Replicas: replicas, Create: create})
	if err != nil {
		return err
	}
	return l.openReadStream(ctx, cfg, replicas, slog.New(slog.DiscardHandler))
}

// errLedgerLost is what a start or a rebuild says when the stream no longer
// holds what this data dir's projection applied.
func errLedgerLost(stream string, applied uint64, why error) error {
	return fmt.Errorf("%w: the stream %s no longer holds the ledger this data dir applied (up to sequence %d): %v. "+
		"The ledger will not start over it or create a new, empty stream: restore the stream from a backup "+
		"(or, to start a new ledger, use an empty data dir)", eventstore.ErrStreamTampered, stream, applied, why)
}

func (l *ledgerLog) close() { l.closed.Do(l.doClose) }

func (l *ledgerLog) doClose() {
	if l.nc != nil {
		_ = l.nc.Drain()
		for i := 0; i < 100 && !l.nc.IsClosed(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		l.nc.Close()
	}
	if l.emb != nil {
		l.emb.Shutdown()
	}
	if l.unlock != nil {
		l.unlock()
	}
}
