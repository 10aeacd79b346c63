// Package keyfile reads and writes the ledger's signing keys as PEM files:
// PKCS#8 "PRIVATE KEY" blocks for a key ring (what `openssl genpkey
// -algorithm ed25519` writes too), PKIX "PUBLIC KEY" blocks for auditors. A
// ring file may hold several keys: the ones retired by rotations (still
// needed to check older events) and the newest. Private key files must be
// readable by their owner only.
package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sessionledger/ledger/domain"
)

// LoadRing reads a key ring file. Like ssh, it refuses a file that group
// or others may read.
func LoadRing(path string) (*domain.Keyring, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s is readable by others (mode %#o); chmod 600 it", path, st.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	var keys []domain.SigningKey
	for rest := raw; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "PRIVATE KEY" {
			continue
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
		priv, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("signing key %s: a %T, not an Ed25519 key", path, k)
		}
		sk, err := domain.NewSigningKey(priv.Seed())
		if err != nil {
			return nil, err
		}
		keys = append(keys, sk)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("signing key %s holds no PEM \"PRIVATE KEY\" block", path)
	}
	return domain.NewKeyring(keys...), nil
}

// Create writes a new key to a file that must not exist yet.
func Create(path string) (domain.SigningKey, error) {
	k, err := domain.GenerateSigningKey(rand.Reader)
	if err != nil {
		return k, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.Private())
	if err != nil {
		return k, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return k, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return k, fmt.Errorf("create signing key: %w", err)
	}
	_, err = fmt.Fprintf(f, "# session ledger signing key %s\n", k.ID())
	if err == nil {
		err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return k, err
}

// WritePublic writes public keys as PEM, each after a comment naming it.
func WritePublic(out io.Writer, keys []domain.PublicKey) error {
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k.Key)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "# session ledger signing key %s\n", k.ID)
		if err := pem.Encode(out, &pem.Block{Type: "PUBLIC KEY", Bytes: der}); err != nil {
			return err
		}
	}
	return nil
}

// LoadPublic reads the public keys an auditor trusts: PEM "PUBLIC KEY"
// blocks, or the public halves of a private key file.
func LoadPublic(path string) ([]domain.PublicKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	var out []domain.PublicKey
	for rest := raw; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var k any
		switch block.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "PRIVATE KEY":
			var priv any
			if priv, err = x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
				if p, ok := priv.(ed25519.PrivateKey); ok {
					k = p.Public()
				}
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("public key %s: %w", path, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key %s: not an Ed25519 key", path)
		}
		pk, err := domain.NewPublicKey(pub)
		if err != nil {
			return nil, err
		}
		out = append(out, pk)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("public key %s holds no PEM \"PUBLIC KEY\" block", path)
	}
	return out, nil
}
