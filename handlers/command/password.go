package command

import (
	"fmt"

	"github.com/alexedwards/argon2id"
)

// Argon2id hashes passwords with OWASP's recommended minimum parameters
// (m=19 MiB, t=2, p=1) and verifies them in constant time.
type Argon2id struct {
	params *argon2id.Params
	dummy  string
}

// OWASPParams is the OWASP Password Storage Cheat Sheet's argon2id setting.
var OWASPParams = argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// NewArgon2id prepares a hasher, including the hash of a random dummy
// password that unknown-email logins are checked against so they take as
// long as wrong-password logins.
func NewArgon2id(params argon2id.Params) (*Argon2id, error) {
	h := &Argon2id{params: &params}
	dummy, err := argon2id.CreateHash("dummy password for timing equalisation", h.params)
	if err != nil {
		return nil, fmt.Errorf("argon2id: %w", err)
	}
	h.dummy = dummy
	return h, nil
}

func (h *Argon2id) Hash(password string) (string, error) {
	s, err := argon2id.CreateHash(password, h.params)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return s, nil
}

func (h *Argon2id) Verify(password, hash string) (bool, error) {
	ok, err := argon2id.ComparePasswordAndHash(password, hash)
	if err != nil {
		return false, fmt.Errorf("verify password: %w", err)
	}
	return ok, nil
}

// Burn spends the same work as Verify against a real hash and fails.
func (h *Argon2id) Burn(password string) error {
	_, _ = argon2id.ComparePasswordAndHash(password, h.dummy)
	return nil
}
