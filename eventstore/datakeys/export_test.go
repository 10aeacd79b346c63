package datakeys

import (
	"encoding/base64"
	"errors"
	"strings"
)

// OpenWithRawKey opens a sealed value with a raw data key, as Open does
// with the unwrapped one: what someone holding that key could do.
func OpenWithRawKey(key []byte, userID, purpose, sealed string) error {
	a, err := newAEAD(key)
	if err != nil {
		return err
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(sealed, sealedPrefix))
	if err != nil || len(raw) < a.NonceSize() {
		return errors.New("malformed")
	}
	_, err = a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], additional(userID, purpose))
	return err
}
