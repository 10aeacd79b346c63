package ports

import (
	"context"
	"errors"
)

// Secrets encrypts a user's secrets and personal data (a TOTP seed, the
// email) under that user's own data key, so they can sit in the immutable
// log: destroying the key (crypto-shredding, on erasure) makes every copy
// unreadable at once, while the events stay verifiable.
//
// Contract: Seal returns text safe to put in an event (no secret, no
// personal data in clear); it creates the user's data key on first use.
// Open returns what Seal was given, for the same user and purpose (a
// ciphertext moved to another user or purpose does not open). After
// Destroy, Seal and Open fail with ErrErased for that user, on every
// instance, for good. The raw data keys never leave the adapter.
type Secrets interface {
	Seal(ctx context.Context, userID, purpose string, plaintext []byte) (string, error)
	Open(ctx context.Context, userID, purpose, sealed string) ([]byte, error)
	Destroy(ctx context.Context, userID string) error
}

// ErrErased means the user's data key was destroyed: what it encrypted is
// gone.
var ErrErased = errors.New("the user's data key was destroyed (erased)")
