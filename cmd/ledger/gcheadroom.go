package main

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// hashesPerSlotBetweenCollections is how many argon2id runs each hash slot
// may finish between two collections: the headroom keepHashHeadroom keeps.
//
// Every argon2id check allocates its whole memory (19 MiB at OWASP's
// setting) and drops it a moment later; golang.org/x/crypto/argon2 offers
// no way to reuse it. With GOGC=100 alone a server whose live heap is small
// (about 35 MiB at 10k sessions, plus the 19 MiB of each hash in flight) runs
// a collection every three or four logins, each marking the whole live heap
// (about 1.1 ms of CPU per login in a 10k-session login run), and each one
// drops nats-server's weakly held message block, which the next versioned
// append then reads back from disk (8 MiB, about 1 ms). Four hashes per slot
// between collections halves both.
const hashesPerSlotBetweenCollections = 4

// headroomLimitFraction is the share of the soft memory limit that the
// headroom may fill. Above about 95 % of the limit the runtime's scavenger
// returns freed pages to the kernel after every cycle and the next hash
// faults them back in; below it the limit still bounds a login flood as it
// did before.
const headroomLimitFraction = 0.85

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

// keepHashHeadroom keeps the collector's heap goal at least hashSlots ×
// hashesPerSlotBetweenCollections password hashes of hashKiB each above the
// live heap, within headroomLimitFraction of the soft memory limit (see
// gcPercentFor), by setting GOGC again after every collection from the heap
// it left live. An explicit GOGC wins, as GOMEMLIMIT does for the limit.
// The garbage between collections is then bounded by the headroom and the
// limit, as the live heap was before: what changes is only how often a
// small heap is marked.
func keepHashHeadroom(hashSlots int, hashKiB int64, log *slog.Logger) {
	if _, set := os.LookupEnv("GOGC"); set || hashSlots <= 0 || hashKiB <= 0 {
		return
	}
	headroom := int64(hashSlots) * hashesPerSlotBetweenCollections * hashKiB << 10
	var cap int64
	if limit := debug.SetMemoryLimit(-1); limit > 0 && limit < 1<<62 {
		cap = int64(float64(limit) * headroomLimitFraction)
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var current atomic.Int64
	current.Store(100)
	retune := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		p := gcPercentFor(int64(sample[0].Value.Uint64()), headroom, cap)
		// Setting GOGC recomputes the pacer's goal; skip changes that would
		// move it by less than a tenth.
		if old := current.Load(); p*10 < int(old)*9 || p*10 > int(old)*11 {
			debug.SetGCPercent(p)
			current.Store(int64(p))
		}
	}
	retune()
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
