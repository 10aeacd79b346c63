package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive lock on the data dir, so two ledger
// processes never run an embedded NATS server or a projection on the same
// files. The lock is released when the process exits, however it exits.
//
// The data dir holds password hashes, emails, the signing key and the NATS
// identities: a dir others may read or enter is refused, not used as is.
// Everything created in it is private too: Pebble and the NATS file store
// create files with the usual 0644/0755, which would leave them readable
// the day someone loosens the dir, so the process's umask is tightened
// first (it is process-wide, and nothing else this process writes needs
// to be shared).
func lockDataDir(dir string) (release func(), err error) {
	syscall.Umask(0o077)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("data dir %s is open to other users (mode %#o): it holds password hashes and keys; chmod 700 %s", dir, perm, dir)
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another ledger process; stop it, or point this command at its NATS with --nats-url", dir)
		}
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
