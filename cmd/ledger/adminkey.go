package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sessionledger/ledger/handlers/httpapi"
)

const adminKeyFile = "admin-key.sha256"

// adminKey resolves the audit endpoints' key: the configured raw key if one
// is set, else the hash kept in the data dir, else a new random key whose
// hash is kept and which is printed once, to out, never again and never to
// the log.
func adminKey(raw, dataDir string, out io.Writer) (httpapi.AdminKey, error) {
	if raw != "" {
		return httpapi.HashAdminKey(raw), nil
	}
	path := filepath.Join(dataDir, adminKeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		var k httpapi.AdminKey
		n, err := hex.Decode(k[:], []byte(strings.TrimSpace(string(b))))
		if err != nil || n != len(k) {
			return k, fmt.Errorf("%s is not a SHA-256 hex digest; delete it to generate a new admin key", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return httpapi.AdminKey{}, err
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return httpapi.AdminKey{}, err
	}
	key := "sla_" + base64.RawURLEncoding.EncodeToString(secret[:])
	k := httpapi.HashAdminKey(key)
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k[:])+"\n"), 0o600); err != nil {
		return k, fmt.Errorf("store admin key hash: %w", err)
	}
	fmt.Fprintf(out, "\nledger: generated an admin key for the audit API (shown once, only its hash is kept in %s):\n\n    %s\n\nSet LEDGER_ADMIN_KEY to choose your own.\n\n", path, key)
	return k, nil
}
