package domain

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// Token layout: "slt_" + session id (32 hex chars, 128 random bits) + secret
// (32 random bytes, base64url without padding, 43 chars). The session id makes
// validation a single lookup; only SHA-256(secret) is ever stored, so a leaked
// data dir or event log cannot be replayed as a bearer token.
const (
	tokenPrefix    = "slt_"
	sessionIDLen   = 32
	secretBytes    = 32
	secretEncLen   = 43
	TokenLen       = len(tokenPrefix) + sessionIDLen + secretEncLen
	tokenHashLabel = "sha256:"
)

// TokenHash is SHA-256 of a token's secret part.
type TokenHash [sha256.Size]byte

// Equal compares in constant time, so response timing says nothing about how
// much of a guessed secret was right.
func (h TokenHash) Equal(o TokenHash) bool {
	return subtle.ConstantTimeCompare(h[:], o[:]) == 1
}

// String is the form used in events: "sha256:<hex>".
func (h TokenHash) String() string { return tokenHashLabel + hex.EncodeToString(h[:]) }

// ParseTokenHash reads the String form back.
func ParseTokenHash(s string) (TokenHash, error) {
	var h TokenHash
	hexPart, ok := strings.CutPrefix(s, tokenHashLabel)
	if !ok || len(hexPart) != 2*len(h) {
		return h, fmt.Errorf("token hash %q: want sha256:<64 hex>", s)
	}
	if _, err := hex.Decode(h[:], []byte(hexPart)); err != nil {
		return h, fmt.Errorf("token hash: %w", err)
	}
	return h, nil
}

// NewToken draws a fresh session id and secret from rand (crypto/rand in
// production) and returns the raw token for the client, the session id and
// the hash to store.
func NewToken(rand io.Reader) (raw, sessionID string, hash TokenHash, err error) {
	var buf [16 + secretBytes]byte
	if _, err := io.ReadFull(rand, buf[:]); err != nil {
		return "", "", hash, fmt.Errorf("new token: %w", err)
	}
	sessionID = hex.EncodeToString(buf[:16])
	secret := buf[16:]
	raw = tokenPrefix + sessionID + base64.RawURLEncoding.EncodeToString(secret)
	return raw, sessionID, sha256.Sum256(secret), nil
}

// ParseToken splits a raw token into its session id and the hash of its
// secret. It allocates only the session id string.
func ParseToken(raw string) (sessionID string, hash TokenHash, err error) {
	if len(raw) != TokenLen || !strings.HasPrefix(raw, tokenPrefix) {
		return "", hash, ErrMalformedToken
	}
	sid := raw[len(tokenPrefix) : len(tokenPrefix)+sessionIDLen]
	if !IsSessionID(sid) {
		return "", hash, ErrMalformedToken
	}
	var secret [secretBytes + 1]byte // decoding 43 chars may touch one spare byte
	n, err := strictB64.Decode(secret[:], []byte(raw[len(tokenPrefix)+sessionIDLen:]))
	if err != nil || n != secretBytes {
		return "", hash, ErrMalformedToken
	}
	return sid, sha256.Sum256(secret[:secretBytes]), nil
}

// IsSessionID reports whether s has the shape of a session id (32 lower-case
// hex characters); callers use it to reject garbage before any lookup.
func IsSessionID(s string) bool {
	if len(s) != sessionIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// strictB64 rejects non-zero padding bits, so each secret has exactly one
// spelling.
var strictB64 = base64.RawURLEncoding.Strict()
