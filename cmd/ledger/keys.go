package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
)

const signingKeyFile = "signing.key"

func signingKeyPath(cfg LogConfig) string {
	if cfg.SigningKeyFile != "" {
		return cfg.SigningKeyFile
	}
	return filepath.Join(cfg.DataDir, signingKeyFile)
}

// keyringForLedger loads the ring, or at a new ledger's first start creates
// signing.key in the data dir. generated says which, so that the caller can
// take the new key back if the stream turns out to hold a ledger already.
func keyringForLedger(cfg LogConfig) (ring *domain.Keyring, generated bool, err error) {
	path := signingKeyPath(cfg)
	ring, err = keyfile.LoadRing(path)
	if err == nil || cfg.SigningKeyFile != "" || !errors.Is(err, fs.ErrNotExist) {
		return ring, false, err
	}
	if _, err := keyfile.Create(path); err != nil {
		return nil, false, err
	}
	ring, err = keyfile.LoadRing(path)
	return ring, true, err
}

// introduce makes sure the log has a key in force. An empty stream gets
// the ring's newest key introduced; a stream that already holds a ledger
// must not be joined with a key generated just now.
func introduce(ctx context.Context, store *eventstore.Store, ring *domain.Keyring, generated bool, keyPath string) error {
	last, err := store.LastSeq(ctx)
	if err != nil {
		return err
	}
	if last > 0 {
		if generated {
			_ = os.Remove(keyPath)
			return fmt.Errorf("the stream %s already holds a ledger, and no signing key was given: start with --signing-key set to the key file of the instance that created it (its data dir's %s)", store.StreamName(), signingKeyFile)
		}
		return nil
	}
	k, _ := ring.Newest()
	_, err = store.Introduce(ctx, k, newID(), time.Now())
	if errors.Is(err, eventstore.ErrConflict) {
		return nil // another instance's first start won; its key is in force
	}
	return err
}

// keysCmd manages the ledger's two kinds of keys: its signing keys (public,
// generate, rotate), which sign every event and never leave the ledger's
// machines, and the service keys (create, list, revoke) that callers
// present in X-API-Key.
type keysCmd struct {
	Public   keysPublicCmd   `cmd:"" help:"Signing keys: print the public keys of a signing key file (PEM), what an auditor needs for 'audit verify --public-key'."`
	Generate keysGenerateCmd `cmd:"" help:"Signing keys: write a new signing key to a file (mode 0600), to add to the key ring before a rotation."`
	Rotate   keysRotateCmd   `cmd:"" help:"Signing keys: put the newest key of --signing-key in force (a signing_key_rotated event signed by the key in force)."`
	Create   keysCreateCmd   `cmd:"" help:"Service keys (X-API-Key): create one with scopes; the key is printed once on stdout, only its hash is stored (service_key_created)."`
	List     keysListCmd     `cmd:"" help:"Service keys (X-API-Key): list them, revoked ones included (never the keys themselves)."`
	Revoke   keysRevokeCmd   `cmd:"" help:"Service keys (X-API-Key): revoke one by id (service_key_revoked); it stops working on every instance that applies it."`
}

type keysPublicCmd struct {
	DataDir        string `name:"data-dir" default:"${default_data_dir}" env:"LEDGER_DATA_DIR" help:"Data dir whose signing.key to read (unless --signing-key)."`
	SigningKeyFile string `name:"signing-key" env:"LEDGER_SIGNING_KEY_FILE" placeholder:"FILE" help:"Signing key file (PEM)."`
}

func (c *keysPublicCmd) Run() error {
	ring, err := keyfile.LoadRing(signingKeyPath(LogConfig{DataDir: c.DataDir, SigningKeyFile: c.SigningKeyFile}))
	if err != nil {
		return err
	}
	var pubs []domain.PublicKey
	for _, k := range ring.Keys() {
		pubs = append(pubs, k.Public())
	}
	return keyfile.WritePublic(os.Stdout, pubs)
}

type keysGenerateCmd struct {
	Out string `name:"out" required:"" placeholder:"FILE" help:"File to create; it must not exist."`
}

func (c *keysGenerateCmd) Run() error {
	k, err := keyfile.Create(c.Out)
	if err != nil {
		return err
	}
	fmt.Printf("created %s (key %s)\n", c.Out, k.ID())
	return nil
}

type keysRotateCmd struct {
	logFlags
	outputFlags
}

func (c *keysRotateCmd) Run() error {
	ctx, stop := signalContext()
	defer stop()
	cfg := c.config()
	ring, err := keyfile.LoadRing(signingKeyPath(cfg))
	if err != nil {
		return err
	}
	next, _ := ring.Newest()
	ll, err := openLog(ctx, cfg, c.logger(), false)
	if err != nil {
		return err
	}
	defer ll.close()
	if err := ll.openStore(ctx, cfg, false); err != nil {
		return err
	}
	v, err := ll.store.Rotate(ctx, ring, next, newID(), time.Now())
	if err != nil {
		return err
	}
	fmt.Printf("rotated: key %s is in force from sequence %d; keep the retired keys in the ring file, they check older events\n", next.ID(), v.Seq)
	return nil
}
