// Package datakeys implements ports.Secrets on NATS JetStream: envelope
// encryption with one data key per user, so that a user's secrets and
// personal data can sit in the immutable ledger stream and still be erased
// (crypto-shredding).
//
//   - The master key (32 bytes, --master-key-file, see eventstore/keyfile)
//     never leaves the ledger's machines and is in no stream.
//   - Each user's data key (32 random bytes, drawn on the user's first Seal)
//     is wrapped with AES-256-GCM under the master key, the user id bound as
//     additional data, and stored in a JetStream key-value bucket
//     (DefaultBucket, stream KV_LEDGER_DATAKEYS, one revision per key), NOT
//     in the ledger stream: unlike the ledger, the bucket lets a message be
//     removed.
//   - Seal encrypts with AES-256-GCM under the user's data key, the user id
//     and the purpose bound as additional data; the result is "v1." and the
//     nonce and ciphertext in base64url.
//   - Destroy overwrites the stored wrapped key with random bytes (JetStream
//     secure erase, the message-delete API without no_erase) and leaves a
//     purge marker in its place, which says "erased" for good: Seal and Open
//     fail with ports.ErrErased from then on, and the key is never drawn
//     again.
//
// Unwrapped data keys are cached in memory for CacheTTL (DefaultCacheTTL),
// so a key destroyed on one instance stops working on the others within
// that time; the destroying instance forgets it at once.
package datakeys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/handlers/ports"
)

// Defaults.
const (
	DefaultBucket    = "LEDGER_DATAKEYS"
	DefaultCacheTTL  = 30 * time.Second
	DefaultCacheSize = 10000
)

// Config is where the data keys live and what wraps them.
type Config struct {
	// Bucket is the key-value bucket (stream KV_<Bucket>); default
	// DefaultBucket.
	Bucket string
	// Replicas of the bucket's stream when it is created (at least 1): give
	// it the ledger stream's.
	Replicas int
	// Create lets Open create the bucket if it is missing.
	Create bool
	// Master wraps the data keys (keyfile.LoadMasterKey).
	Master [32]byte
	// CacheTTL is how long an unwrapped data key (or the news that it was
	// destroyed) is kept in memory; default DefaultCacheTTL. It bounds how
	// long a key destroyed by another instance keeps working here.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached keys; default DefaultCacheSize.
	CacheSize int
}

// Store is ports.Secrets on a JetStream bucket.
type Store struct {
	js       jetstream.JetStream
	stream   jetstream.Stream
	bucket   string
	master   cipher.AEAD
	masterID string
	cache    *lru.LRU[string, cached]
}

var _ ports.Secrets = (*Store)(nil)

type cached struct {
	aead   cipher.AEAD // nil when erased
	erased bool
}

// Headers of the key-value layout (as nats.go's KeyValue writes them), so
// that `nats kv` reads the bucket too.
const (
	kvOperation = "KV-Operation"
	kvPurge     = "PURGE"
	kvDelete    = "DEL"
	rollup      = "Nats-Rollup"
	rollupSub   = "sub"
)

// Format versions and labels of what this package writes.
const (
	wrapVersion   = 1
	sealedPrefix  = "v1."
	wrapLabel     = "sessionledger/datakey/v1\x00"
	sealLabel     = "sessionledger/secret/v1\x00"
	checkLabel    = "sessionledger/master-check/v1\x00"
	checkKey      = "master-check"
	userKeyPrefix = "user."
)

var validUserID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ErrWrongMasterKey means the bucket's data keys were wrapped under another
// master key than the one this instance was given.
var ErrWrongMasterKey = errors.New("wrong master key")

// StreamName is the bucket's stream.
func StreamName(bucket string) string {
	if bucket == "" {
		bucket = DefaultBucket
	}
	return "KV_" + bucket
}

// StreamConfig is the bucket's stream: the key-value layout (one message per
// key, roll-ups) but, unlike a bucket nats.go creates, messages may be
// deleted, which is what lets Destroy overwrite a wrapped key on disk. Reads
// go to the stream leader (no direct gets), so a destroyed key is seen as
// destroyed by the next read anywhere.
func StreamConfig(cfg Config) jetstream.StreamConfig {
	bucket := cfg.Bucket
	if bucket == "" {
		bucket = DefaultBucket
	}
	return jetstream.StreamConfig{
		Name:              StreamName(bucket),
		Description:       "session ledger: per-user data keys, wrapped under the master key; destroyed on erasure",
		Subjects:          []string{"$KV." + bucket + ".>"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardNew,
		Replicas:          max(cfg.Replicas, 1),
		MaxMsgsPerSubject: 1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		AllowRollup:       true,
		DenyDelete:        false,
		DenyPurge:         false, // roll-ups need it
		AllowDirect:       false,
		Duplicates:        2 * time.Minute,
	}
}

// Open binds to the bucket (creating it if cfg.Create) and checks that the
// master key is the one its data keys are wrapped under: the first Open of
// a bucket records a check value, and every later one must open it.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, StreamName(cfg.Bucket))
	if errors.Is(err, jetstream.ErrStreamNotFound) && cfg.Create {
		stream, err = js.CreateStream(ctx, StreamConfig(cfg))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			stream, err = js.Stream(ctx, StreamName(cfg.Bucket))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("data keys bucket %s: %w", cfg.Bucket, err)
	}
	master, err := newAEAD(cfg.Master[:])
	if err != nil {
		return nil, err
	}
	s := &Store{
		js: js, stream: stream, bucket: cfg.Bucket, master: master, masterID: keyfile.MasterKeyID(cfg.Master),
		cache: lru.NewLRU[string, cached](cfg.CacheSize, nil, cfg.CacheTTL),
	}
	if err := s.checkMaster(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// MasterKeyID names the master key this store wraps with.
func (s *Store) MasterKeyID() string { return s.masterID }

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (s *Store) subject(key string) string { return "$KV." + s.bucket + "." + key }

// checkMaster opens the bucket's check value, writing it first if the
// bucket has none.
func (s *Store) checkMaster(ctx context.Context) error {
	for attempt := 0; attempt < 3; attempt++ {
		msg, err := s.stream.GetLastMsgForSubject(ctx, s.subject(checkKey))
		switch {
		case err == nil:
			if _, err := s.unwrap(msg.Data, checkKey); err != nil {
				return fmt.Errorf("%w: the data keys in bucket %s are not wrapped under master key %s (%v); every instance sharing a ledger needs the same --master-key-file",
					ErrWrongMasterKey, s.bucket, s.masterID, err)
			}
			return nil
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("data keys bucket %s: %w", s.bucket, err)
		}
		value, err := s.wrap([]byte(checkLabel), checkKey)
		if err != nil {
			return err
		}
		if err := s.create(ctx, checkKey, value); err != nil && !errors.Is(err, errExists) {
			return fmt.Errorf("data keys bucket %s: %w", s.bucket, err)
		}
	}
	return fmt.Errorf("data keys bucket %s: the master key check kept changing", s.bucket)
}

// wrap encrypts a data key under the master key: version, master key id
// length and id, nonce, ciphertext.
func (s *Store) wrap(dataKey []byte, name string) ([]byte, error) {
	nonce := make([]byte, s.master.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte{wrapVersion, byte(len(s.masterID))}, s.masterID...)
	out = append(out, nonce...)
	return s.master.Seal(out, nonce, dataKey, []byte(wrapLabel+name)), nil
}

func (s *Store) unwrap(b []byte, name string) ([]byte, error) {
	if len(b) < 2 || b[0] != wrapVersion || len(b) < 2+int(b[1])+s.master.NonceSize() {
		return nil, errors.New("not a wrapped key")
	}
	id := string(b[2 : 2+int(b[1])])
	rest := b[2+int(b[1]):]
	nonce, ct := rest[:s.master.NonceSize()], rest[s.master.NonceSize():]
	key, err := s.master.Open(nil, nonce, ct, []byte(wrapLabel+name))
	if err != nil {
		if id != s.masterID {
			return nil, fmt.Errorf("%w: wrapped under %s, this instance has %s", ErrWrongMasterKey, id, s.masterID)
		}
		return nil, fmt.Errorf("%w: the wrapped key does not open", ErrWrongMasterKey)
	}
	return key, nil
}

var errExists = errors.New("key exists")

// create writes a key only if its subject has never held anything: not a
// data key, and not the marker a Destroy leaves.
func (s *Store) create(ctx context.Context, key string, value []byte) error {
	_, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: s.subject(key), Data: value}, jetstream.WithExpectLastSequencePerSubject(0))
	if wrongLastSeq(err) {
		return errExists
	}
	return err
}

func wrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func erasedMarker(msg *jetstream.RawStreamMsg) bool {
	op := msg.Header.Get(kvOperation)
	return op == kvPurge || op == kvDelete
}

// dataKey is the user's data key as an AEAD, drawn and stored first if
// create and the user has none.
func (s *Store) dataKey(ctx context.Context, userID string, create bool) (cipher.AEAD, error) {
	if !validUserID.MatchString(userID) {
		return nil, fmt.Errorf("data key: invalid user id %q", userID)
	}
	if c, ok := s.cache.Get(userID); ok {
		if c.erased {
			return nil, ports.ErrErased
		}
		return c.aead, nil
	}
	key := userKeyPrefix + userID
	for attempt := 0; attempt < 5; attempt++ {
		msg, err := s.stream.GetLastMsgForSubject(ctx, s.subject(key))
		switch {
		case err == nil && erasedMarker(msg):
			s.cache.Add(userID, cached{erased: true})
			return nil, ports.ErrErased
		case err == nil:
			raw, err := s.unwrap(msg.Data, key)
			if err != nil {
				return nil, fmt.Errorf("data key of user %s: %w", userID, err)
			}
			a, err := newAEAD(raw)
			clear(raw)
			if err != nil {
				return nil, err
			}
			s.cache.Add(userID, cached{aead: a})
			return a, nil
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return nil, fmt.Errorf("data key of user %s: %w", userID, err)
		case !create:
			return nil, fmt.Errorf("data key of user %s: %w", userID, ErrNoKey)
		}
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		wrapped, err := s.wrap(raw, key)
		clear(raw)
		if err != nil {
			return nil, err
		}
		if err := s.create(ctx, key, wrapped); err != nil && !errors.Is(err, errExists) {
			return nil, fmt.Errorf("data key of user %s: %w", userID, err)
		}
		// Created, or someone else created (or destroyed) it first: read
		// back what counts.
	}
	return nil, fmt.Errorf("data key of user %s: it kept changing", userID)
}

// ErrNoKey: the user has never had a data key, so nothing was sealed for
// them.
var ErrNoKey = errors.New("the user has no data key")

func additional(userID, purpose string) []byte {
	return []byte(sealLabel + userID + "\x00" + purpose)
}

// Seal encrypts plaintext for the user and purpose (creating the user's
// data key on first use).
func (s *Store) Seal(ctx context.Context, userID, purpose string, plaintext []byte) (string, error) {
	a, err := s.dataKey(ctx, userID, true)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return sealedPrefix + base64.RawURLEncoding.EncodeToString(a.Seal(nonce, nonce, plaintext, additional(userID, purpose))), nil
}

// Open decrypts what Seal returned for the same user and purpose.
func (s *Store) Open(ctx context.Context, userID, purpose, sealed string) ([]byte, error) {
	body, ok := strings.CutPrefix(sealed, sealedPrefix)
	if !ok {
		return nil, errors.New("open: not a sealed value (want the v1. prefix)")
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	a, err := s.dataKey(ctx, userID, false)
	if err != nil {
		return nil, err
	}
	if len(raw) < a.NonceSize() {
		return nil, errors.New("open: sealed value too short")
	}
	out, err := a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], additional(userID, purpose))
	if err != nil {
		return nil, errors.New("open: the sealed value is not this user's, or not for this purpose")
	}
	return out, nil
}

// Destroy erases the user's data key for good, on every instance (within
// their CacheTTL): the stored wrapped key is overwritten with random bytes
// and deleted (JetStream secure erase), and a purge marker takes its place,
// so the key is never drawn again. Destroying again, or destroying the key
// of a user who never had one, leaves the marker in place.
func (s *Store) Destroy(ctx context.Context, userID string) error {
	if !validUserID.MatchString(userID) {
		return fmt.Errorf("destroy data key: invalid user id %q", userID)
	}
	s.cache.Add(userID, cached{erased: true})
	key := userKeyPrefix + userID
	for attempt := 0; attempt < 10; attempt++ {
		msg, err := s.stream.GetLastMsgForSubject(ctx, s.subject(key))
		switch {
		case err == nil && erasedMarker(msg):
			return nil
		case err == nil:
			if err := s.stream.SecureDeleteMsg(ctx, msg.Sequence); err != nil {
				// Someone else may have erased it first; fail only if
				// it is still there.
				if again, gerr := s.stream.GetLastMsgForSubject(ctx, s.subject(key)); gerr == nil && again.Sequence == msg.Sequence {
					return fmt.Errorf("destroy data key of user %s: %w", userID, err)
				}
			}
			continue // now the subject is empty (or someone else wrote): look again
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("destroy data key of user %s: %w", userID, err)
		}
		m := nats.NewMsg(s.subject(key))
		m.Header.Set(kvOperation, kvPurge)
		m.Header.Set(rollup, rollupSub)
		_, err = s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(0))
		if err == nil {
			s.cache.Add(userID, cached{erased: true})
			return nil
		}
		if !wrongLastSeq(err) {
			return fmt.Errorf("destroy data key of user %s: %w", userID, err)
		}
		// A Seal drew a key in between: erase that one too.
	}
	return fmt.Errorf("destroy data key of user %s: it kept changing", userID)
}
