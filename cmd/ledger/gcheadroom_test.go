package main

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name                 string
		live, headroom, cap_ int64
		want                 int
	}{
		{"small heap gets the headroom", 38 * mib, 152 * mib, 0, 400},
		{"the limit's share caps it", 76 * mib, 152 * mib, 190 * mib, 150},
		{"never below the default", 150 * mib, 152 * mib, 217 * mib, 100},
		{"a live heap past the cap keeps the default", 300 * mib, 152 * mib, 217 * mib, 100},
		{"large headroom over a tiny heap is bounded", 1 * mib, 1024 * mib, 0, 10_000},
		{"no headroom", 38 * mib, 0, 0, 100},
		{"nothing live yet", 0, 152 * mib, 0, 100},
	} {
		if got := gcPercentFor(c.live, c.headroom, c.cap_); got != c.want {
			t.Errorf("%s: gcPercentFor(%d MiB, %d MiB, %d MiB) = %d, want %d", c.name, c.live/mib, c.headroom/mib, c.cap_/mib, got, c.want)
		}
	}
}

func TestAfterEveryCollection(t *testing.T) {
	var calls atomic.Int64
	afterEveryCollection(func() { calls.Add(1) })
	// Cleanups run on their own goroutine after the collection; each call
	// must arm the next, so two collections must give two calls.
	for want := int64(1); want <= 2; want++ {
		deadline := time.Now().Add(10 * time.Second)
		for calls.Load() < want && time.Now().Before(deadline) {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		if got := calls.Load(); got < want {
			t.Fatalf("after collections: %d calls, want at least %d", got, want)
		}
	}
}
