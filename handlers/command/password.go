package command

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"

	"github.com/alexedwards/argon2id"
	"golang.org/x/crypto/argon2"

	"github.com/sessionledger/ledger/internal/argon2reuse"
)

// Argon2id hashes passwords with OWASP's recommended minimum parameters
// (m=19 MiB, t=2, p=1) and verifies them in constant time. Its hashes are
// github.com/alexedwards/argon2id's (the reference implementation's encoded
// form), each computed by golang.org/x/crypto/argon2 on a block buffer
// this hasher keeps (internal/argon2reuse) instead of a fresh 19 MiB per
// hash: that garbage ran the collector about every third login.
type Argon2id struct {
	params *argon2id.Params
	dummy  string
	// bufs keeps up to its capacity idle buffers (one per hash slot of the
	// BoundedHasher around it); a hash that finds none makes one, and one
	// returned to a full pool is left to the collector, so the memory kept
	// is bounded by the capacity, not by the callers.
	bufs chan *argon2reuse.Buffer
}

// OWASPParams is the OWASP Password Storage Cheat Sheet's argon2id setting.
var OWASPParams = argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// NewArgon2id prepares a hasher that keeps up to buffers idle hash buffers
// (the number of hashes that may run at once: more would only sit idle),
// including the hash of a random dummy password that unknown-email logins
// are checked against so they take as long as wrong-password logins.
func NewArgon2id(params argon2id.Params, buffers int) (*Argon2id, error) {
	if buffers < 1 {
		return nil, fmt.Errorf("argon2id: at least one buffer is required")
	}
	h := &Argon2id{params: &params, bufs: make(chan *argon2reuse.Buffer, buffers)}
	// Not through the pool: a server that never checks a password (one
	// that only validates) should not keep a hash's memory for it.
	dummy, err := h.hash("dummy password for timing equalisation", argon2reuse.NewBuffer(params.Memory, params.Parallelism))
	if err != nil {
		return nil, fmt.Errorf("argon2id: %w", err)
	}
	h.dummy = dummy
	return h, nil
}

// key is argon2id's key of password on buf, or, when buf is nil, on a
// pooled buffer (one made if the pool is empty) that goes back afterwards.
func (h *Argon2id) key(buf *argon2reuse.Buffer, password, salt []byte, p *argon2id.Params) []byte {
	pooled := buf == nil
	if pooled {
		select {
		case buf = <-h.bufs:
		default:
			buf = argon2reuse.NewBuffer(p.Memory, p.Parallelism)
		}
	}
	key := argon2reuse.IDKey(buf, password, salt, p.Iterations, p.Memory, p.Parallelism, p.KeyLength)
	// A stored hash of larger parameters (an older setting, an imported
	// hash) grew the buffer; kept, it would hold that memory for good, so
	// only a buffer of this hasher's size goes back.
	if !pooled || buf.Size() > argon2reuse.Blocks(h.params.Memory, h.params.Parallelism) {
		return key
	}
	select {
	case h.bufs <- buf:
	default:
	}
	return key
}

// Hash returns the encoded hash of password, in argon2id.CreateHash's form.
func (h *Argon2id) Hash(password string) (string, error) {
	return h.hash(password, nil)
}

// hash hashes on buf, or on a pooled buffer when buf is nil.
func (h *Argon2id) hash(password string, buf *argon2reuse.Buffer) (string, error) {
	salt := make([]byte, h.params.SaltLength)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	key := h.key(buf, []byte(password), salt, h.params)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, h.params.Memory, h.params.Iterations, h.params.Parallelism,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Verify checks password against an encoded hash with the parameters the
// hash carries, as argon2id.ComparePasswordAndHash does.
func (h *Argon2id) Verify(password, hash string) (bool, error) {
	params, salt, key, err := argon2id.DecodeHash(hash)
	if err != nil {
		return false, fmt.Errorf("verify password: %w", err)
	}
	if params.Iterations < 1 || params.Parallelism < 1 || len(key) == 0 {
		// x/crypto panics on the first two; an empty key matches anything.
		return false, fmt.Errorf("verify password: stored hash has t=%d, p=%d and a key of %d bytes", params.Iterations, params.Parallelism, len(key))
	}
	other := h.key(nil, []byte(password), salt, params)
	return subtle.ConstantTimeEq(int32(len(key)), int32(len(other))) == 1 && subtle.ConstantTimeCompare(key, other) == 1, nil
}

// Burn spends the same work as Verify against a real hash and fails.
func (h *Argon2id) Burn(password string) error {
	_, _ = h.Verify(password, h.dummy)
	return nil
}
