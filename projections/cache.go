package projections

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/sessionledger/ledger/domain"
)

// SessionCacheSize is how many decoded sessions the projection keeps in
// memory for validation (about 300 bytes each).
const SessionCacheSize = 1 << 17

const cacheShards = 64

// sessionCache holds decoded sessions so that validating a hot token skips
// Pebble. It must never serve a session older than what the projection has
// committed: ApplyBatch invalidates every session it writes, and a reader
// only inserts what it read if no batch committed in between (gen). The
// generation check and the insert happen under the shard's lock, which
// invalidation takes too, so an insert can never land after the
// invalidation of the write it missed.
type sessionCache struct {
	seed     maphash.Seed
	gen      atomic.Uint64
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]domain.SessionSnapshot
}

func newSessionCache(size int) *sessionCache {
	c := &sessionCache{seed: maphash.MakeSeed(), perShard: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]domain.SessionSnapshot)
	}
	return c
}

// shard spreads session ids evenly over the shards. Each shard holds at
// most perShard sessions, so an uneven spread wastes the cache: the former
// hash of the first two hex characters gave some shards eight times the
// share of others, and at 1M sessions about one validate in twelve of a
// pool that fits the cache missed it.
func (c *sessionCache) shard(id string) *cacheShard {
	return &c.shards[maphash.String(c.seed, id)%cacheShards]
}

func (c *sessionCache) get(id string) (domain.SessionSnapshot, bool) {
	sh := c.shard(id)
	sh.mu.RLock()
	s, ok := sh.m[id]
	sh.mu.RUnlock()
	return s, ok
}

// put inserts a session read from Pebble while the cache was at generation
// gen; if a batch has committed since, the read may be stale and is dropped.
func (c *sessionCache) put(s domain.SessionSnapshot, gen uint64) {
	sh := c.shard(s.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.gen.Load() != gen {
		return
	}
	if len(sh.m) >= c.perShard {
		for k := range sh.m { // evict an arbitrary entry
			delete(sh.m, k)
			break
		}
	}
	sh.m[s.ID] = s
}

// invalidate is called after a batch that wrote these sessions committed.
func (c *sessionCache) invalidate(ids []string) {
	if len(ids) == 0 {
		return
	}
	c.gen.Add(1)
	for _, id := range ids {
		sh := c.shard(id)
		sh.mu.Lock()
		delete(sh.m, id)
		sh.mu.Unlock()
	}
}
