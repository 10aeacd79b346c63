package domain

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Personal API keys: a user makes one while logged in, and exchanges it
// (with the account's email) for a session token later, as a script or a
// device without a password would. The key is a credential like a
// password, but drawn at random with 256 bits, so SHA-256 is enough to
// store it: no slow hash is needed against guessing a key nobody chose.
//
// Key layout: "pak_" + key id (32 hex chars, 128 random bits) + secret (32
// random bytes, base64url without padding, 43 chars). "pak_" (personal API
// key) is not "slt_" (a session token) nor the prefixes of the ledger's own
// keys ("sla_" admin), so a key pasted in the wrong place is recognisable.
// The key id makes the check one lookup among the user's keys; only
// SHA-256(secret) is ever stored, and it is compared in constant time.
const (
	APIKeyPrefix = "pak_"
	apiKeyIDLen  = 32
	APIKeyLen    = len(APIKeyPrefix) + apiKeyIDLen + secretEncLen
)

// API key event types (on the user's subject).
const (
	EventAPIKeyCreated EventType = "api_key_created"
	EventAPIKeyRevoked EventType = "api_key_revoked"
	EventAPIKeyUsed    EventType = "api_key_used"
)

// SessionMethodAPIKey is session_started's method for a session an API key
// was exchanged for; a password login is "password".
const (
	SessionMethodPassword = "password"
	SessionMethodAPIKey   = "api_key"
)

// LoginFailedWrongAPIKey is login_failed's reason for an API key exchange
// that failed on a known account. It counts towards the same throttle as a
// wrong password.
const LoginFailedWrongAPIKey = "wrong_api_key"

// Payloads of the API key events. Field names are part of the documented
// schema.
type (
	APIKeyCreated struct {
		KeyID   string `json:"key_id"`
		Name    string `json:"name"`
		KeyHash string `json:"key_hash"`
		// ExpiresAt is absent for a key that never expires.
		ExpiresAt   *time.Time `json:"expires_at,omitempty"`
		BySessionID string     `json:"by_session_id,omitempty"`
	}
	APIKeyRevoked struct {
		KeyID       string `json:"key_id"`
		BySessionID string `json:"by_session_id,omitempty"`
	}
	APIKeyUsed struct {
		KeyID string `json:"key_id"`
	}
)

// APIKeyRules bound a user's API keys.
type APIKeyRules struct {
	// MaxPerUser is how many keys a user may hold that are not revoked
	// (expired ones count until they are revoked).
	MaxPerUser int
	// UseGranularity: an exchange records api_key_used only if the key's
	// last recorded use is at least this old.
	UseGranularity time.Duration
	// MaxLifetime is the longest expiry a key may be created with.
	MaxLifetime time.Duration
}

// DefaultMaxAPIKeysPerUser is the cap on a user's keys.
const DefaultMaxAPIKeysPerUser = 20

// DefaultAPIKeyRules: 20 keys, uses recorded at most hourly, expiry at most
// ten years ahead.
func DefaultAPIKeyRules() APIKeyRules {
	return APIKeyRules{MaxPerUser: DefaultMaxAPIKeysPerUser, UseGranularity: time.Hour, MaxLifetime: 3650 * Day}
}

// Validate rejects rules that would refuse every key.
func (r APIKeyRules) Validate() error {
	switch {
	case r.MaxPerUser < 1:
		return fmt.Errorf("api keys: at most per user must be at least 1, got %d", r.MaxPerUser)
	case r.UseGranularity < 0:
		return fmt.Errorf("api keys: use granularity must not be negative, got %s", r.UseGranularity)
	case r.MaxLifetime < time.Second:
		return fmt.Errorf("api keys: max lifetime must be at least 1s, got %s", r.MaxLifetime)
	}
	return nil
}

// API key errors.
var (
	ErrAPIKeyNotFound    = errors.New("api key not found")
	ErrTooManyAPIKeys    = errors.New("too many api keys")
	ErrInvalidAPIKeyName = errors.New("api key name must be 1 to 100 characters, without control characters")
	ErrInvalidAPIKeyTTL  = errors.New("api key expiry out of range")
	ErrMalformedAPIKey   = errors.New("malformed api key")
)

// MaxAPIKeyNameLen is the longest name, in characters.
const MaxAPIKeyNameLen = 100

// NewAPIKey draws a key id and secret from rand (crypto/rand in
// production): the raw key for the user, shown once, its id and the hash
// to store.
func NewAPIKey(rand io.Reader) (raw, keyID string, hash TokenHash, err error) {
	var buf [16 + secretBytes]byte
	if _, err := io.ReadFull(rand, buf[:]); err != nil {
		return "", "", hash, fmt.Errorf("new api key: %w", err)
	}
	keyID = hex.EncodeToString(buf[:16])
	secret := buf[16:]
	raw = APIKeyPrefix + keyID + base64.RawURLEncoding.EncodeToString(secret)
	return raw, keyID, sha256.Sum256(secret), nil
}

// ParseAPIKey splits a raw key into its id and the hash of its secret.
func ParseAPIKey(raw string) (keyID string, hash TokenHash, err error) {
	if len(raw) != APIKeyLen || !strings.HasPrefix(raw, APIKeyPrefix) {
		return "", hash, ErrMalformedAPIKey
	}
	id := raw[len(APIKeyPrefix) : len(APIKeyPrefix)+apiKeyIDLen]
	if !IsAPIKeyID(id) {
		return "", hash, ErrMalformedAPIKey
	}
	var secret [secretBytes + 1]byte
	n, err := strictB64.Decode(secret[:], []byte(raw[len(APIKeyPrefix)+apiKeyIDLen:]))
	if err != nil || n != secretBytes {
		return "", hash, ErrMalformedAPIKey
	}
	return id, sha256.Sum256(secret[:secretBytes]), nil
}

// IsAPIKeyID reports whether s has the shape of a key id (32 lower-case hex
// characters, like a session id).
func IsAPIKeyID(s string) bool { return IsSessionID(s) }

// APIKeyHint is what a list shows of a key: its prefix and the start of its
// id, which the raw key begins with. It holds nothing of the secret.
func APIKeyHint(keyID string) string {
	if len(keyID) > 8 {
		keyID = keyID[:8]
	}
	return APIKeyPrefix + keyID + "…"
}

// ValidateAPIKeyName accepts 1 to MaxAPIKeyNameLen characters of valid
// UTF-8, without control characters and not only spaces.
func ValidateAPIKeyName(name string) error {
	if !utf8.ValidString(name) || strings.TrimSpace(name) == "" || utf8.RuneCountInString(name) > MaxAPIKeyNameLen {
		return ErrInvalidAPIKeyName
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		return ErrInvalidAPIKeyName
	}
	return nil
}

// APIKey is one key of a user as folded from its events: present from its
// api_key_created until its api_key_revoked.
type APIKey struct {
	ID         string    `json:"key_id"`
	Name       string    `json:"name"`
	Hash       TokenHash `json:"-"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"` // zero: never
	LastUsedAt time.Time `json:"last_used_at"`
}

// ExpiredAt reports whether the key is past its expiry at `at` (the expiry
// is exclusive, as a session's deadlines are).
func (k APIKey) ExpiredAt(at time.Time) bool {
	return !k.ExpiresAt.IsZero() && !at.Before(k.ExpiresAt)
}

// APIKeyFromEvent is a key's state from its api_key_created event.
func APIKeyFromEvent(e Event) (APIKey, error) {
	if e.Type != EventAPIKeyCreated {
		return APIKey{}, fmt.Errorf("api key from %s event: want %s", e.Type, EventAPIKeyCreated)
	}
	p, err := DecodePayload[APIKeyCreated](e)
	if err != nil {
		return APIKey{}, err
	}
	h, err := ParseTokenHash(p.KeyHash)
	if err != nil {
		return APIKey{}, fmt.Errorf("event %s: %w", e.ID, err)
	}
	if !IsAPIKeyID(p.KeyID) || e.UserID == "" {
		return APIKey{}, fmt.Errorf("event %s: incomplete api_key_created", e.ID)
	}
	k := APIKey{ID: p.KeyID, Name: p.Name, Hash: h, CreatedAt: e.Time}
	if p.ExpiresAt != nil {
		k.ExpiresAt = p.ExpiresAt.UTC()
	}
	return k, nil
}

// WithUse is the key once an api_key_used at `at` is folded.
func (k APIKey) WithUse(at time.Time) APIKey {
	if at.After(k.LastUsedAt) {
		k.LastUsedAt = at.UTC()
	}
	return k
}

// APIKeys are the user's keys that are not revoked.
func (u *User) APIKeys() []APIKey {
	out := make([]APIKey, 0, len(u.apiKeys))
	for _, k := range u.apiKeys {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b APIKey) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// WithAPIKeys is the user with its keys that are not revoked, as stored by
// a projection.
func (u *User) WithAPIKeys(keys []APIKey) *User {
	c := *u
	c.apiKeys = make(map[string]APIKey, len(keys))
	for _, k := range keys {
		c.apiKeys[k.ID] = k
	}
	return &c
}

// CreateAPIKey decides a new key for the user, on behalf of the caller's
// live session. expiresAt zero is a key that never expires; otherwise it
// must be after `at` and at most r.MaxLifetime ahead. A user holds at most
// r.MaxPerUser keys that are not revoked.
func (u *User) CreateAPIKey(callerSessionID, keyID, name string, hash TokenHash, expiresAt, at time.Time, r APIKeyRules) (Event, error) {
	if err := u.requireLive(callerSessionID, at); err != nil {
		return Event{}, err
	}
	if err := ValidateAPIKeyName(name); err != nil {
		return Event{}, err
	}
	if !IsAPIKeyID(keyID) {
		return Event{}, ErrMalformedAPIKey
	}
	if _, taken := u.apiKeys[keyID]; taken {
		return Event{}, fmt.Errorf("api key id %s already in use", keyID)
	}
	p := APIKeyCreated{KeyID: keyID, Name: name, KeyHash: hash.String(), BySessionID: callerSessionID}
	if !expiresAt.IsZero() {
		if !expiresAt.After(at) || expiresAt.Sub(at) > r.MaxLifetime {
			return Event{}, ErrInvalidAPIKeyTTL
		}
		t := expiresAt.UTC()
		p.ExpiresAt = &t
	}
	if len(u.apiKeys) >= max(r.MaxPerUser, 1) {
		return Event{}, ErrTooManyAPIKeys
	}
	return newEvent(EventAPIKeyCreated, u.id, "", at, p), nil
}

// RevokeAPIKey decides the end of one of the user's keys, on behalf of the
// caller's live session. A key that is not the user's, or already revoked,
// is not found.
func (u *User) RevokeAPIKey(callerSessionID, keyID string, at time.Time) (Event, error) {
	if err := u.requireLive(callerSessionID, at); err != nil {
		return Event{}, err
	}
	if _, ok := u.apiKeys[keyID]; !ok {
		return Event{}, ErrAPIKeyNotFound
	}
	return newEvent(EventAPIKeyRevoked, u.id, "", at, APIKeyRevoked{KeyID: keyID, BySessionID: callerSessionID}), nil
}

// APIKeyLogin is what an exchange presents: the key's id and secret hash
// (from ParseAPIKey; Malformed if it did not parse), and the session to
// start with it.
type APIKeyLogin struct {
	KeyID        string
	Secret       TokenHash
	Malformed    bool
	SessionID    string
	TokenHash    TokenHash
	KeepLoggedIn bool
	Email        string // normalized, for login_failed's email hash
}

// LoginWithAPIKey decides an API key exchange. With a key of the user that
// is neither revoked nor expired and whose secret matches (compared in
// constant time), ok is true and the events start a session (method
// api_key, its max deadline no later than the key's expiry) under the
// live-session limit, after an api_key_used if the key's last recorded use
// is at least r.UseGranularity old. Otherwise ok is false and the events
// are those of a failed login (reason wrong_api_key), throttle included:
// the same rule as a wrong password, on the same count.
func (u *User) LoginWithAPIKey(l APIKeyLogin, at time.Time, p Policy, r APIKeyRules, t LoginThrottle) (events []Event, ok bool) {
	k, found := u.apiKeys[l.KeyID]
	match := k.Hash.Equal(l.Secret) // on the zero hash too when not found: the same work either way
	if l.Malformed || !found || !match || k.ExpiredAt(at) {
		return u.failLogin(LoginFailedWrongAPIKey, EmailHash(l.Email), at, t), false
	}
	if at.Sub(k.LastUsedAt) >= r.UseGranularity {
		events = append(events, newEvent(EventAPIKeyUsed, u.id, "", at, APIKeyUsed{KeyID: k.ID}))
	}
	events = append(events, u.evictFor(l.SessionID, at, p)...)
	start := SessionStarted{
		Method:            SessionMethodAPIKey,
		KeepLoggedIn:      l.KeepLoggedIn,
		MaxExpiresAt:      at.Add(p.MaxLifetime(l.KeepLoggedIn, false)).UTC(),
		IdleWindowSeconds: int64(p.IdleWindow / time.Second),
		TokenHash:         l.TokenHash.String(),
		APIKeyID:          k.ID,
	}
	if !k.ExpiresAt.IsZero() && k.ExpiresAt.Before(start.MaxExpiresAt) {
		start.MaxExpiresAt = k.ExpiresAt.UTC()
	}
	return append(events, newEvent(EventSessionStarted, u.id, l.SessionID, at, start)), true
}
