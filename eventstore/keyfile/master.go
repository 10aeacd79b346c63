package keyfile

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The master key wraps every user's data key (eventstore/datakeys). It is
// 32 random bytes in one PEM block of this type, in a file only its owner
// may read, like the signing key.
const masterKeyBlock = "LEDGER MASTER KEY"

// MasterKeyID names a master key without revealing it: "mk:" and the first
// 8 bytes of SHA-256 over a label and the key, in hex.
func MasterKeyID(k [32]byte) string {
	h := sha256.Sum256(append([]byte("sessionledger/master-key-id/v1\x00"), k[:]...))
	return "mk:" + hex.EncodeToString(h[:8])
}

// LoadMasterKey reads a master key file, refusing one that group or others
// may read.
func LoadMasterKey(path string) ([32]byte, error) {
	var k [32]byte
	st, err := os.Stat(path)
	if err != nil {
		return k, fmt.Errorf("master key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return k, fmt.Errorf("master key %s is readable by others (mode %#o); chmod 600 it", path, st.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("master key: %w", err)
	}
	for rest := raw; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return k, fmt.Errorf("master key %s holds no PEM %q block", path, masterKeyBlock)
		}
		if block.Type != masterKeyBlock {
			continue
		}
		if len(block.Bytes) != len(k) {
			return k, fmt.Errorf("master key %s: %d bytes, want %d", path, len(block.Bytes), len(k))
		}
		copy(k[:], block.Bytes)
		return k, nil
	}
}

// CreateMasterKey writes a new random master key to a file that must not
// exist yet (mode 0600).
func CreateMasterKey(path string) ([32]byte, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return k, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return k, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return k, fmt.Errorf("create master key: %w", err)
	}
	_, err = fmt.Fprintf(f, "# session ledger master key %s: wraps every user's data key; every instance sharing a ledger needs this file\n", MasterKeyID(k))
	if err == nil {
		err = pem.Encode(f, &pem.Block{Type: masterKeyBlock, Bytes: k[:]})
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return k, err
}

// LoadOrCreateMasterKey loads path, or creates it if it does not exist and
// create is set; created says which.
func LoadOrCreateMasterKey(path string, create bool) (k [32]byte, created bool, err error) {
	k, err = LoadMasterKey(path)
	if err == nil || !create || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if k, err = CreateMasterKey(path); errors.Is(err, fs.ErrExist) {
		k, err = LoadMasterKey(path) // another process created it first
		return k, false, err
	}
	return k, err == nil, err
}
