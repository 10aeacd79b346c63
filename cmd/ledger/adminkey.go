package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/sessionledger/ledger/handlers/httpapi"
)

const (
	// adminKeyFile is where a generated admin key is kept, mode 0600.
	adminKeyFile = "admin-key"
	// legacyAdminKeyHash is where earlier versions kept only the hash of
	// the key they printed; it is still honoured.
	legacyAdminKeyHash = "admin-key.sha256"
	// minAdminKeyLen: an admin key must have at least 128 bits, since only
	// its SHA-256 is compared, with no slow hash in between. Its length is
	// what can be checked: 32 characters are 128 bits in hex (`openssl rand
	// -hex 16`), the sparsest alphabet key generators commonly use; base64
	// gives 192 bits in 32 characters.
	minAdminKeyLen = 32
	// minAdminKeyChars catches placeholders (32 times the same letter);
	// 32 random hex characters have fewer than 8 distinct ones with a
	// chance below 1 in 10^7.
	minAdminKeyChars = 8
	maxAdminKeyLen   = 1024
)

// checkAdminKey refuses a key that cannot be the 128-bit secret the audit
// API needs, or that no X-API-Key header could carry.
func checkAdminKey(key, source string) error {
	if len(key) < minAdminKeyLen {
		return fmt.Errorf("the admin key from %s has %d characters; at least %d are required (128 bits as hex): make one with `openssl rand -hex 32`", source, len(key), minAdminKeyLen)
	}
	if len(key) > maxAdminKeyLen {
		return fmt.Errorf("the admin key from %s has %d characters; at most %d are accepted", source, len(key), maxAdminKeyLen)
	}
	distinct := map[rune]bool{}
	for _, c := range key {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("the admin key from %s must be printable ASCII without spaces (it is sent in an X-API-Key header)", source)
		}
		distinct[c] = true
	}
	if len(distinct) < minAdminKeyChars {
		return fmt.Errorf("the admin key from %s uses only %d different characters; it looks like a placeholder, not a random key: make one with `openssl rand -hex 32`", source, len(distinct))
	}
	return nil
}

// configuredAdminKey is the hash of the key the operator gave, from
// LEDGER_ADMIN_KEY (cfg.AdminKey) or --admin-key-file; ok is false when
// none was given.
func configuredAdminKey(cfg ServiceConfig) (k httpapi.AdminKey, source string, ok bool, err error) {
	switch {
	case cfg.AdminKey != "":
		if err := checkAdminKey(cfg.AdminKey, "LEDGER_ADMIN_KEY"); err != nil {
			return k, "", false, err
		}
		return httpapi.HashAdminKey(cfg.AdminKey), "LEDGER_ADMIN_KEY", true, nil
	case cfg.AdminKeyFile != "":
		k, err := readAdminKeyFile(cfg.AdminKeyFile, "--admin-key-file")
		return k, cfg.AdminKeyFile, err == nil, err
	}
	return k, "", false, nil
}

// readAdminKeyFile reads and hashes a key file: one line, mode 0600 or
// stricter, like the data dir and the signing key.
func readAdminKeyFile(path, what string) (httpapi.AdminKey, error) {
	var k httpapi.AdminKey
	st, err := os.Stat(path)
	if err != nil {
		return k, fmt.Errorf("%s: %w", what, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return k, fmt.Errorf("%s %s is open to other users (mode %#o): it holds the admin key; chmod 600 %s", what, path, perm, path)
	}
	if st.Size() > maxAdminKeyLen+2 {
		return k, fmt.Errorf("%s %s is %d bytes; an admin key file holds one key of at most %d characters", what, path, st.Size(), maxAdminKeyLen)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("%s: %w", what, err)
	}
	key := strings.TrimSpace(string(raw))
	if err := checkAdminKey(key, path); err != nil {
		return k, err
	}
	return httpapi.HashAdminKey(key), nil
}

// dataDirAdminKey is the admin key when none is configured: the one in
// <data-dir>/admin-key, else the hash an earlier version kept, else a new
// random key written to <data-dir>/admin-key (mode 0600). Only the file's
// path is ever logged, never the key; only its hash stays in memory.
func dataDirAdminKey(dataDir string, log *slog.Logger) (httpapi.AdminKey, string, error) {
	path := filepath.Join(dataDir, adminKeyFile)
	k, err := readAdminKeyFile(path, "admin key file")
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, path, err
	}
	legacy := filepath.Join(dataDir, legacyAdminKeyHash)
	if b, err := os.ReadFile(legacy); err == nil {
		n, err := hex.Decode(k[:], []byte(strings.TrimSpace(string(b))))
		if err != nil || n != len(k) {
			return k, "", fmt.Errorf("%s is not a SHA-256 hex digest; delete it to generate a new admin key", legacy)
		}
		return k, legacy, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return k, "", err
	}

	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return k, "", err
	}
	key := "sla_" + base64.RawURLEncoding.EncodeToString(secret[:])
	if err := writeNewFile(path, []byte(key+"\n")); err != nil {
		return k, "", fmt.Errorf("store the generated admin key: %w", err)
	}
	log.Info("generated an admin key (the bootstrap key: every scope, for the audit and admin APIs); read it from its file (mode 0600), or set LEDGER_ADMIN_KEY or --admin-key-file to choose your own", "file", path)
	return httpapi.HashAdminKey(key), path, nil
}

// writeNewFile creates path (mode 0600, failing if it exists) with data,
// synced to disk.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}
