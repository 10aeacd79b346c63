package domain

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	voied25519 "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"golang.org/x/crypto/hkdf"
)

// Who may write the log is decided here, not by NATS permissions: an event
// counts only if it is authenticated by the ledger's signing key, which
// access to NATS does not give.
//
// A signing key is an Ed25519 key pair. Every event carries two
// authenticators over its hash (which covers its content, its key id and its
// link to the previous event of its subject):
//
//   - Sig, an Ed25519 signature: an auditor who holds only a public key can
//     check every event.
//   - MAC, an HMAC-SHA256 under a key derived from the private key: what a
//     ledger instance, which holds the private key anyway, checks before it
//     applies an event. It costs about a microsecond where an Ed25519
//     verification costs tens, so checking every event does not cap a
//     rebuild.
//
// Only a holder of the private key can produce either, so they authenticate
// the same writers. Which key is in force at each point of the log is itself
// in the log (KeyChain): the first key is introduced by a signing_key_introduced
// event, and each rotation is a signing_key_rotated event authenticated by
// the key it retires and vouched for by the key it brings in.

// Errors of authentication.
var (
	// ErrNotAuthentic: the event's MAC or signature is missing or wrong, or
	// it is signed by a key that is not in force at its place in the log.
	ErrNotAuthentic = errors.New("event is not authenticated by the ledger's signing key")
	// ErrKeyUnavailable: the event is signed by the key in force, but this
	// verifier does not hold that key, so it cannot tell. Not a verdict on
	// the event: the caller must wait for the key, not reject the event.
	ErrKeyUnavailable = errors.New("the signing key in force is not available here")
)

// Domain separation: a signature or MAC over an event hash can never be
// replayed as one over a rotation proof, or the reverse.
const (
	eventSigContext    = "sessionledger/event/v2\x00"
	rotationSigContext = "sessionledger/key-rotation/v1\x00"
	macKeyInfo         = "sessionledger event mac v1"
)

// SigningKey is a private signing key with its derived MAC key.
type SigningKey struct {
	id   string
	priv ed25519.PrivateKey
	mac  []byte
}

// NewSigningKey builds a key from its 32-byte Ed25519 seed.
func NewSigningKey(seed []byte) (SigningKey, error) {
	if len(seed) != ed25519.SeedSize {
		return SigningKey{}, fmt.Errorf("signing key seed of %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	mac := make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, seed, nil, []byte(macKeyInfo)), mac); err != nil {
		return SigningKey{}, fmt.Errorf("derive mac key: %w", err)
	}
	return SigningKey{id: KeyID(priv.Public().(ed25519.PublicKey)), priv: priv, mac: mac}, nil
}

// GenerateSigningKey draws a new key from r (crypto/rand in production).
func GenerateSigningKey(r io.Reader) (SigningKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(r, seed); err != nil {
		return SigningKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	return NewSigningKey(seed)
}

func (k SigningKey) ID() string { return k.id }

// Private is the Ed25519 private key, for storing it.
func (k SigningKey) Private() ed25519.PrivateKey { return k.priv }

func (k SigningKey) Public() PublicKey {
	return PublicKey{ID: k.id, Key: k.priv.Public().(ed25519.PublicKey)}
}

func (k SigningKey) sign(e *Event) {
	msg := eventMessage(e.Hash)
	// curve25519-voi signs in about half the time crypto/ed25519 takes
	// (12 against 24 us here; a signature per event, a use included), and
	// Ed25519 signatures are deterministic: the bytes are the same
	// (TestSignaturesAreCryptoEd25519s).
	e.Sig = encodeAuth(voied25519.Sign(voied25519.PrivateKey(k.priv), msg))
	e.MAC = encodeAuth(k.macOf(msg))
}

func (k SigningKey) macOf(msg []byte) []byte {
	m := hmac.New(sha256.New, k.mac)
	m.Write(msg)
	return m.Sum(nil)
}

// PublicKey is what an auditor needs to check signatures.
type PublicKey struct {
	ID  string
	Key ed25519.PublicKey
}

// NewPublicKey wraps a raw Ed25519 public key.
func NewPublicKey(raw []byte) (PublicKey, error) {
	if len(raw) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("public key of %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	k := ed25519.PublicKey(append([]byte(nil), raw...))
	return PublicKey{ID: KeyID(k), Key: k}, nil
}

// KeyID names a key by its public half: "ed25519:" and the first 8 bytes of
// SHA-256 of the key, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

func eventMessage(hash string) []byte { return append([]byte(eventSigContext), hash...) }

func rotationMessage(previousKID, kid string) []byte {
	return []byte(rotationSigContext + previousKID + "\x00" + kid)
}

var authEncoding = base64.RawURLEncoding

func encodeAuth(b []byte) string { return authEncoding.EncodeToString(b) }

// Verifier checks one event's authenticator under the key the KeyChain says
// is in force for it.
type Verifier interface {
	// Verify checks e under key (the key in force). It returns
	// ErrNotAuthentic, or ErrKeyUnavailable if it cannot check that key.
	Verify(e Event, key PublicKey) error
}

// Keyring holds private keys and checks MACs: the verifier of a ledger
// instance. Keys are kept in the order given; the order means nothing to
// verification, which follows the log.
type Keyring struct {
	keys map[string]SigningKey
	ids  []string
}

func NewKeyring(keys ...SigningKey) *Keyring {
	r := &Keyring{keys: make(map[string]SigningKey, len(keys))}
	for _, k := range keys {
		if _, dup := r.keys[k.id]; !dup {
			r.ids = append(r.ids, k.id)
		}
		r.keys[k.id] = k
	}
	return r
}

// Key returns the private key with this id.
func (r *Keyring) Key(id string) (SigningKey, bool) {
	k, ok := r.keys[id]
	return k, ok
}

// Keys lists the keys in the order given.
func (r *Keyring) Keys() []SigningKey {
	out := make([]SigningKey, len(r.ids))
	for i, id := range r.ids {
		out[i] = r.keys[id]
	}
	return out
}

// Newest is the last key given: the one a new ledger introduces.
func (r *Keyring) Newest() (SigningKey, bool) {
	if len(r.ids) == 0 {
		return SigningKey{}, false
	}
	return r.keys[r.ids[len(r.ids)-1]], true
}

func (r *Keyring) Verify(e Event, key PublicKey) error {
	return r.verifyUnder(e, key.ID)
}

// VerifyNamed checks e's MAC under the key e names (its kid), as Verify
// would under that key: the same answer, for a caller that checks MACs
// ahead of the log order. It says nothing about whether that key is in
// force at e's place in the log; only a KeyChain can, and Authenticate
// must still be asked.
func (r *Keyring) VerifyNamed(e Event) error {
	return r.verifyUnder(e, e.KeyID)
}

func (r *Keyring) verifyUnder(e Event, id string) error {
	k, ok := r.keys[id]
	if !ok {
		return fmt.Errorf("%w: key %s", ErrKeyUnavailable, id)
	}
	got, err := authEncoding.DecodeString(e.MAC)
	if err != nil || !hmac.Equal(got, k.macOf(eventMessage(e.Hash))) {
		return fmt.Errorf("%w: MAC does not match under key %s", ErrNotAuthentic, id)
	}
	return nil
}

// SignatureVerifier checks Ed25519 signatures with public keys only: the
// auditor's verifier.
type SignatureVerifier struct{}

func (SignatureVerifier) Verify(e Event, key PublicKey) error {
	return VerifySignature(e, key)
}

// VerifySignature checks e's Ed25519 signature under key.
func VerifySignature(e Event, key PublicKey) error {
	sig, ok := SignatureBytes(e)
	if !ok || !ed25519.Verify(key.Key, eventMessage(e.Hash), sig[:]) {
		return fmt.Errorf("%w: signature does not verify under key %s", ErrNotAuthentic, key.ID)
	}
	return nil
}

// SignatureBytes is the Ed25519 signature e carries, if it is well formed:
// exactly 64 bytes in the encoding Sign writes. For verifiers that check
// signatures other than one by one (VerifySignature reads them so too).
func SignatureBytes(e Event) (sig [ed25519.SignatureSize]byte, ok bool) {
	if authEncoding.DecodedLen(len(e.Sig)) != len(sig) {
		return sig, false
	}
	n, err := authEncoding.Decode(sig[:], []byte(e.Sig))
	return sig, err == nil && n == len(sig)
}

// SignatureText is sig as an event carries it (Event.Sig): the inverse of
// SignatureBytes, for a verifier that kept only the bytes.
func SignatureText(sig [ed25519.SignatureSize]byte) string { return encodeAuth(sig[:]) }

// SignedMessage is what an event's Ed25519 signature covers: its hash,
// under the ledger's domain separation. For a verifier of many signatures
// at once; VerifySignature is the one verdict on each.
func SignedMessage(hash string) []byte { return eventMessage(hash) }

// Key event payloads.
type (
	SigningKeyIntroduced struct {
		KeyID     string `json:"kid"`
		PublicKey string `json:"public_key"` // base64url, raw Ed25519
	}
	SigningKeyRotated struct {
		PreviousKeyID string `json:"previous_kid"`
		KeyID         string `json:"kid"`
		PublicKey     string `json:"public_key"`
		// Proof is the new key's signature over (previous kid, kid): the
		// new key vouches for its predecessor, so an auditor who trusts
		// only a later key can still anchor the earlier ones.
		Proof string `json:"proof"`
	}
)

// IntroduceKey is the first event of a new ledger: it puts k in force.
func IntroduceKey(k SigningKey, at time.Time) Event {
	return newEvent(EventSigningKeyIntroduced, "", "", at, SigningKeyIntroduced{
		KeyID: k.id, PublicKey: encodeAuth(k.Public().Key),
	})
}

// RotateKey retires the key in force (previousKID) for next. The event must
// be sealed with the key it retires.
func RotateKey(previousKID string, next SigningKey, at time.Time) Event {
	return newEvent(EventSigningKeyRotated, "", "", at, SigningKeyRotated{
		PreviousKeyID: previousKID, KeyID: next.id, PublicKey: encodeAuth(next.Public().Key),
		Proof: encodeAuth(ed25519.Sign(next.priv, rotationMessage(previousKID, next.id))),
	})
}

// KeyChain follows which signing key is in force at each point of the log.
// Fold every event through Authenticate, in log order: before the first
// signing_key_introduced no event is authentic; after it, an event counts
// only if it is signed by the key then in force; a signing_key_rotated
// authenticated by that key puts the next one in force and retires it for
// good. A key is therefore never trusted because an event names it, only
// because the key before it (or, for the first, the verifier's own key
// material) says so.
type KeyChain struct {
	Active string               // "" before the introduction
	Keys   map[string]PublicKey // every key the log put in force
	// Order lists the keys in the order they came into force. State and
	// KeyChainFromState store and restore the chain.
	Order []PublicKey
}

// Authenticate decides whether e is authentic at this point of the log and,
// if it is a key event, folds it. It returns nil, an error matching
// ErrNotAuthentic (reject the event), or one matching ErrKeyUnavailable
// (cannot decide here: do not fold, do not reject).
func (c *KeyChain) Authenticate(e Event, v Verifier) error {
	if e.KeyID == "" || e.MAC == "" || e.Sig == "" {
		return fmt.Errorf("%w: event is unsigned", ErrNotAuthentic)
	}
	if c.Active == "" {
		if e.Type != EventSigningKeyIntroduced {
			return fmt.Errorf("%w: no signing key has been introduced yet", ErrNotAuthentic)
		}
		p, err := DecodePayload[SigningKeyIntroduced](e)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNotAuthentic, err)
		}
		key, err := decodePublicKey(p.PublicKey)
		if err != nil || key.ID != p.KeyID || key.ID != e.KeyID {
			return fmt.Errorf("%w: key introduction names a key it is not signed by", ErrNotAuthentic)
		}
		if err := v.Verify(e, key); err != nil {
			return err
		}
		c.admit(key)
		return nil
	}
	if e.Type == EventSigningKeyIntroduced {
		return fmt.Errorf("%w: a signing key was already introduced (%s)", ErrNotAuthentic, c.Order[0].ID)
	}
	if e.KeyID != c.Active {
		return fmt.Errorf("%w: signed by key %s, but key %s is in force", ErrNotAuthentic, e.KeyID, c.Active)
	}
	if err := v.Verify(e, c.Keys[c.Active]); err != nil {
		return err
	}
	if e.Type == EventSigningKeyRotated {
		p, err := DecodePayload[SigningKeyRotated](e)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNotAuthentic, err)
		}
		next, err := decodePublicKey(p.PublicKey)
		proof, perr := authEncoding.DecodeString(p.Proof)
		switch {
		case err != nil || next.ID != p.KeyID:
			return fmt.Errorf("%w: rotation names a malformed key", ErrNotAuthentic)
		case p.PreviousKeyID != c.Active:
			return fmt.Errorf("%w: rotation retires %s, but %s is in force", ErrNotAuthentic, p.PreviousKeyID, c.Active)
		case c.Keys[next.ID].Key != nil:
			return fmt.Errorf("%w: rotation to a key that was already in force", ErrNotAuthentic)
		case perr != nil || !ed25519.Verify(next.Key, rotationMessage(p.PreviousKeyID, next.ID), proof):
			return fmt.Errorf("%w: the new key's proof does not verify", ErrNotAuthentic)
		}
		c.admit(next)
	}
	return nil
}

func (c *KeyChain) admit(k PublicKey) {
	if c.Keys == nil {
		c.Keys = map[string]PublicKey{}
	}
	c.Keys[k.ID] = k
	c.Order = append(c.Order, k)
	c.Active = k.ID
}

// Anchored reports whether any key the chain put in force is among trusted.
// Forward, each key vouched for its successor by signing the rotation;
// backward, each successor vouched for its predecessor with its proof; so
// trusting one key of the chain is trusting all of it.
func (c *KeyChain) Anchored(trusted []PublicKey) bool {
	for _, t := range trusted {
		if k, ok := c.Keys[t.ID]; ok && k.Key.Equal(t.Key) {
			return true
		}
	}
	return false
}

// KeyNamedBy is the key a key event puts in force, unverified: a hint of
// which key to check the next events under, never a reason to trust it.
func KeyNamedBy(e Event) (PublicKey, bool) {
	var raw string
	switch e.Type {
	case EventSigningKeyIntroduced:
		p, err := DecodePayload[SigningKeyIntroduced](e)
		if err != nil {
			return PublicKey{}, false
		}
		raw = p.PublicKey
	case EventSigningKeyRotated:
		p, err := DecodePayload[SigningKeyRotated](e)
		if err != nil {
			return PublicKey{}, false
		}
		raw = p.PublicKey
	default:
		return PublicKey{}, false
	}
	k, err := decodePublicKey(raw)
	return k, err == nil
}

func decodePublicKey(s string) (PublicKey, error) {
	raw, err := authEncoding.DecodeString(s)
	if err != nil {
		return PublicKey{}, err
	}
	return NewPublicKey(raw)
}

// KeyChainState is the chain in plain fields, for storage adapters.
type KeyChainState struct {
	Keys [][]byte `json:"keys"` // raw public keys, in the order they came into force
}

func (c *KeyChain) State() KeyChainState {
	var s KeyChainState
	for _, k := range c.Order {
		s.Keys = append(s.Keys, []byte(k.Key))
	}
	return s
}

// KeyChainFromState restores a chain saved with State.
func KeyChainFromState(s KeyChainState) (*KeyChain, error) {
	c := &KeyChain{}
	for _, raw := range s.Keys {
		k, err := NewPublicKey(raw)
		if err != nil {
			return nil, err
		}
		c.admit(k)
	}
	return c, nil
}
