package command

import (
	"errors"
	"sync/atomic"
	"time"
)

// ErrBusy means the server is at its bound of password hashes: argon2id
// takes 19 MiB and tens of milliseconds each, so without a bound, memory
// and latency grow with the number of anonymous callers. The caller retries
// later (503 BUSY with Retry-After).
var ErrBusy = errors.New("too many password checks at once; retry shortly")

// hashFunc is the interface of what BoundedHasher bounds.
type hashFunc interface {
	Hash(password string) (string, error)
	Verify(password, hash string) (bool, error)
	Burn(password string) error
}

// BoundedHasher lets at most Concurrency hashes run at once and at most
// Queue callers wait, each for at most Wait; beyond that, ErrBusy at once.
// Hash, Verify and Burn are bounded alike, so a login for an unknown email
// is refused for load exactly when a wrong password would be.
type BoundedHasher struct {
	inner   hashFunc
	slots   chan struct{}
	queue   int64
	wait    time.Duration
	waiting atomic.Int64
	refused atomic.Uint64
	hashes  atomic.Uint64 // hashes done
	hashing atomic.Int64  // nanoseconds spent in them
}

// NewBoundedHasher bounds inner. concurrency must be at least 1; queue may
// be 0 (no waiting).
func NewBoundedHasher(inner hashFunc, concurrency, queue int, wait time.Duration) (*BoundedHasher, error) {
	if inner == nil || concurrency < 1 || queue < 0 || wait < 0 {
		return nil, errors.New("command.NewBoundedHasher: a hasher, concurrency >= 1, queue >= 0 and wait >= 0 are required")
	}
	return &BoundedHasher{inner: inner, slots: make(chan struct{}, concurrency), queue: int64(queue), wait: wait}, nil
}

// Refused counts the checks refused with ErrBusy.
func (b *BoundedHasher) Refused() uint64 { return b.refused.Load() }

func (b *BoundedHasher) acquire() error {
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	if b.waiting.Add(1) > b.queue {
		b.waiting.Add(-1)
		b.refused.Add(1)
		return ErrBusy
	}
	defer b.waiting.Add(-1)
	t := time.NewTimer(b.wait)
	defer t.Stop()
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-t.C:
		b.refused.Add(1)
		return ErrBusy
	}
}

func (b *BoundedHasher) release() { <-b.slots }

// Hashing reports how many hashes ran (checks and burns included) and the
// time spent inside them, queueing excluded: what logins spend on
// passwords, to tell apart from what they spend on everything else.
func (b *BoundedHasher) Hashing() (count uint64, spent time.Duration) {
	return b.hashes.Load(), time.Duration(b.hashing.Load())
}

// track counts one hash that started at start (deferred, after acquire).
func (b *BoundedHasher) track(start time.Time) {
	b.hashing.Add(int64(time.Since(start)))
	b.hashes.Add(1)
}

func (b *BoundedHasher) Hash(password string) (string, error) {
	if err := b.acquire(); err != nil {
		return "", err
	}
	defer b.release()
	defer b.track(time.Now())
	return b.inner.Hash(password)
}

func (b *BoundedHasher) Verify(password, hash string) (bool, error) {
	if err := b.acquire(); err != nil {
		return false, err
	}
	defer b.release()
	defer b.track(time.Now())
	return b.inner.Verify(password, hash)
}

func (b *BoundedHasher) Burn(password string) error {
	if err := b.acquire(); err != nil {
		return err
	}
	defer b.release()
	defer b.track(time.Now())
	return b.inner.Burn(password)
}
