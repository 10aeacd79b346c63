package main

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// keepHashHeadroom exists because every argon2id check used to allocate its whole memory (19 MiB at OWASP's
// setting) and drop it a moment later. Since hashes run on buffers kept per
// hash slot (command.Argon2id, internal/argon2reuse) they make no garbage,
// and this headroom only raises the heap goal; what follows is from before.
// With GOGC=100 alone a server whose live heap is small
// (about 35 MiB at 10k sessions, plus the 19 MiB of each hash in flight) runs
// a collection every three or four logins, each marking the whole live heap
// (about 1.1 ms of CPU per login in a 10k-session login run), and each one
// drops nats-server's weakly held message block, which the next versioned
// append then reads back from disk (8 MiB, about 1 ms). Four hashes per
// slot between collections halves both, but the garbage it lets stay costs
// RSS: on the 10k set a login flood peaked at 292 MiB against 196-213 MiB
// without it (--only attack --quick), too close to the 300 MiB goal to be
// the default.

// headroomLimitFraction is the share of the soft memory limit that the heap
// goal may reach through the headroom. The process's RSS runs well above its
// Go heap (code, runtime metadata, pages not yet returned, Pebble's cache),
// and a login flood keeps the headroom on for as long as it lasts: at 85 % a
// flood on the 10k set peaked at 291 MiB, at 75 % at 292 MiB.
const headroomLimitFraction = 0.75

// gcPercentFor is the GOGC that puts the collector's heap goal (about live
// × (1 + GOGC/100)) at live + headroom, no higher than cap (when cap > 0),
// and never below the default 100: the headroom only ever makes the
// collector run less often than GOGC=100 would, and only while the live heap
// is small next to the headroom.
func gcPercentFor(live, headroom, cap int64) int {
	const floor, ceiling = 100, 10_000
	if live <= 0 || headroom <= 0 {
		return floor
	}
	target := live + headroom
	if cap > 0 && target > cap {
		target = cap
	}
	p := (target - live) * 100 / live
	return int(min(max(p, floor), ceiling))
}

// keepHashHeadroom keeps the collector's heap goal hashSlots × perSlot
// password hashes of hashKiB each above the
// live heap, within headroomLimitFraction of the soft memory limit (see
// gcPercentFor), whenever hashes (a counter of argon2id runs) moved since
// the collection before: GOGC is set again after every collection. Without
// password hashing the collector paces at GOGC=100 as before, so validates'
// garbage does not hold the heap up. An explicit GOGC wins, as GOMEMLIMIT
// does for the limit.
func keepHashHeadroom(hashSlots, perSlot int, hashKiB int64, hashes func() uint64, log *slog.Logger) {
	if _, set := os.LookupEnv("GOGC"); set || hashSlots <= 0 || perSlot <= 0 || hashKiB <= 0 {
		return
	}
	headroom := int64(hashSlots) * int64(perSlot) * hashKiB << 10
	var cap int64
	if limit := debug.SetMemoryLimit(-1); limit > 0 && limit < 1<<62 {
		cap = int64(float64(limit) * headroomLimitFraction)
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	// Only the cleanup goroutine, one call at a time, runs retune.
	current, seen := 100, hashes()
	retune := func() {
		n := hashes()
		hashing := n != seen
		seen = n
		p := 100
		if hashing {
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				p = gcPercentFor(int64(sample[0].Value.Uint64()), headroom, cap)
			}
		}
		// Setting GOGC recomputes the pacer's goal; skip changes that would
		// move it by less than a tenth.
		if p*10 < current*9 || p*10 > current*11 {
			debug.SetGCPercent(p)
			current = p
		}
	}
	afterEveryCollection(retune)
	log.Debug("collector headroom for password hashes", "mib", headroom>>20, "cap_mib", cap>>20)
}

// sentinel is heap-allocated so that a cleanup can be attached to it.
type sentinel struct{ _ [64]byte }

// afterEveryCollection calls fn after each garbage collection, for the
// life of the process: a cleanup runs after the collection that found its
// object unreachable, and each one arms the next.
func afterEveryCollection(fn func()) {
	var arm func()
	arm = func() {
		runtime.AddCleanup(new(sentinel), func(struct{}) {
			fn()
			arm()
		}, struct{}{})
	}
	arm()
}
