package handlerstest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"

	"github.com/sessionledger/ledger/handlers/ports"
)

// Secrets is ports.Secrets in memory: a random AES-256-GCM key per user,
// the user id and purpose bound as additional data, as the real adapter
// does. Destroy forgets the key.
type Secrets struct {
	mu     sync.Mutex
	keys   map[string][]byte
	erased map[string]bool
}

// NewSecrets is an empty key store.
func NewSecrets() *Secrets {
	return &Secrets{keys: map[string][]byte{}, erased: map[string]bool{}}
}

func (s *Secrets) aead(userID string, create bool) (cipher.AEAD, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.erased[userID] {
		return nil, ports.ErrErased
	}
	k, ok := s.keys[userID]
	if !ok {
		if !create {
			return nil, errors.New("handlerstest: no data key for this user")
		}
		k = make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		s.keys[userID] = k
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (s *Secrets) Seal(_ context.Context, userID, purpose string, plaintext []byte) (string, error) {
	a, err := s.aead(userID, true)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(a.Seal(nonce, nonce, plaintext, []byte(userID+"\x00"+purpose))), nil
}

func (s *Secrets) Open(_ context.Context, userID, purpose, sealed string) ([]byte, error) {
	a, err := s.aead(userID, false)
	if err != nil {
		return nil, err
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(raw) < a.NonceSize() {
		return nil, errors.New("handlerstest: not a sealed secret")
	}
	return a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], []byte(userID+"\x00"+purpose))
}

func (s *Secrets) Destroy(_ context.Context, userID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, userID)
	s.erased[userID] = true
	return nil
}
