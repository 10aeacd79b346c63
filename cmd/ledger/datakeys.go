package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sessionledger/ledger/eventstore/datakeys"
	"github.com/sessionledger/ledger/eventstore/keyfile"
)

const masterKeyFile = "master.key"

func masterKeyPath(cfg LogConfig) string {
	if cfg.MasterKeyFile != "" {
		return cfg.MasterKeyFile
	}
	return filepath.Join(cfg.DataDir, masterKeyFile)
}

// openSecrets opens the users' data keys (ports.Secrets) over the log's
// NATS connection, with the master key of cfg. With create (serve, and the
// CLI commands that write), a missing default master key file is created
// and the bucket too; a master key created just now against a bucket that
// already holds data keys is taken back, and the start refused, as for the
// signing key.
func openSecrets(ctx context.Context, ll *ledgerLog, cfg LogConfig, ttl time.Duration, create bool, log *slog.Logger) (*datakeys.Store, error) {
	path := masterKeyPath(cfg)
	master, created, err := keyfile.LoadOrCreateMasterKey(path, create && cfg.MasterKeyFile == "")
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created the master key that wraps the users' data keys; every instance sharing this ledger needs this file (--master-key-file)",
			"file", path, "key", keyfile.MasterKeyID(master))
	}
	s, err := datakeys.Open(ctx, ll.nc, datakeys.Config{
		Replicas: streamReplicas(cfg, ll.nc), Create: create, Master: master, CacheTTL: ttl,
	})
	if err != nil {
		if created {
			_ = os.Remove(path)
		}
		if errors.Is(err, datakeys.ErrWrongMasterKey) && created {
			return nil, fmt.Errorf("this ledger's data keys are wrapped under another master key, and none was given: start with --master-key-file set to the master key file of the instance that created it (its data dir's %s)", masterKeyFile)
		}
		return nil, err
	}
	return s, nil
}

// secretsForAudit is the data keys as the audit commands may read them:
// nil (emails show as "(sealed)") when this machine has no master key or
// the identity may not read the bucket. It never creates anything.
func secretsForAudit(ctx context.Context, ll *ledgerLog, cfg LogConfig) *datakeys.Store {
	if _, err := os.Stat(masterKeyPath(cfg)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := openSecrets(octx, ll, cfg, 0, false, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil
	}
	return s
}
