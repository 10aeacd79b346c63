package command

import (
	"errors"
	"testing"
	"time"
)

// blockingHasher holds every call until released, and says when one began.
type blockingHasher struct {
	started chan string
	release chan struct{}
}

func (b blockingHasher) hold(what string)                    { b.started <- what; <-b.release }
func (b blockingHasher) Hash(string) (string, error)         { b.hold("hash"); return "h", nil }
func (b blockingHasher) Verify(string, string) (bool, error) { b.hold("verify"); return false, nil }
func (b blockingHasher) Burn(string) error                   { b.hold("burn"); return nil }

// TestHashingIsBounded: one slot, one waiter: the third concurrent check is
// refused at once, a waiter gives up after the wait, a refused Burn looks
// exactly like a refused Verify, and only admitted hashes are counted.
func TestHashingIsBounded(t *testing.T) {
	inner := blockingHasher{started: make(chan string, 8), release: make(chan struct{})}
	b, err := NewBoundedHasher(inner, 1, 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 8)
	go func() { _, err := b.Verify("p", "h"); results <- err }()
	if got := <-inner.started; got != "verify" {
		t.Fatalf("first call started %s", got)
	}
	go func() { results <- b.Burn("p") }() // waits for the slot
	for b.waiting.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	if _, err := b.Hash("p"); !errors.Is(err, ErrBusy) {
		t.Fatalf("third concurrent check: %v, want ErrBusy at once", err)
	}
	if err := b.Burn("p"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a Burn beyond the bound: %v, want ErrBusy like a Verify", err)
	}
	inner.release <- struct{}{} // the Verify ends; the waiting Burn runs
	if got := <-inner.started; got != "burn" {
		t.Fatalf("the waiter started %s", got)
	}
	inner.release <- struct{}{}
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("an admitted check failed: %v", err)
		}
	}
	if b.Refused() != 2 {
		t.Fatalf("refused %d, want 2", b.Refused())
	}
	// Only admitted hashes count, and their time is what they ran for.
	if n, spent := b.Hashing(); n != 2 || spent <= 0 {
		t.Fatalf("Hashing() = %d, %v; want the 2 admitted hashes and their time", n, spent)
	}

	short, _ := NewBoundedHasher(inner, 1, 1, 10*time.Millisecond)
	go func() { _, err := short.Verify("p", "h"); results <- err }()
	<-inner.started
	if _, err := short.Verify("p", "h"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a waiter past its wait: %v, want ErrBusy", err)
	}
	inner.release <- struct{}{}
	<-results
	if _, err := NewBoundedHasher(inner, 0, 0, 0); err == nil {
		t.Fatal("concurrency 0 accepted")
	}
}
