package projections

import (
	"bytes"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// During a rebuild most of the fold's reads are of keys the rebuild wrote
// a moment ago: a user's events sit close together in the log, and each
// one reads the user's version, and each session_started reads the user's
// hot index and every session in it (prune). Pebble answers those through
// the batch, every memtable and every level, and an iterator over the hot
// index seeks in each of them: that was half of the applier's time on the
// quick bench set, and more on larger ones.
//
// So a rebuild also keeps a bounded cache of what it wrote of the keys
// read most (sessions and versions), and of each recently read user's hot
// index (the sorted list of its keys). It is fed from the same place as the
// filter, the batch's own representation, so every write the fold makes
// reaches it whatever code path made it: a set stores the value, a deletion
// stores "absent", and any other kind of entry empties the cache. A read
// the cache cannot answer goes to Pebble as before, and its answer is
// cached. The cache is coherent with the batch, which is the truth the
// ordinary path reads: the answers, and so verdicts and state, are the
// same; only the work to get them changes. A batch that is not committed
// (a storage error) empties it.

// cacheBudget bounds the bytes the rebuild cache holds: two generations of
// at most half of it each.
var cacheBudget = 8 << 20

// cacheEntryOverhead is a rough per-entry cost of the maps, counted
// against the budget with the keys and values.
const cacheEntryOverhead = 64

// cachedValue is a cached answer for a key: its value, or that it is
// absent.
type cachedValue struct {
	val     []byte
	present bool
}

// genCache is a bounded map in two generations: entries go into the
// current one; when it is full, it becomes the old one and the previous
// old one is dropped. A hit in the old generation moves the entry to the
// current one, so what is used stays.
type genCache[V any] struct {
	cur, old map[string]V
	bytes    int // of cur
	limit    int // per generation
	size     func(k string, v V) int
}

func newGenCache[V any](limit int, size func(string, V) int) *genCache[V] {
	return &genCache[V]{cur: map[string]V{}, old: map[string]V{}, limit: limit, size: size}
}

func (c *genCache[V]) get(k []byte) (V, bool) {
	if v, ok := c.cur[string(k)]; ok {
		return v, true
	}
	v, ok := c.old[string(k)]
	if ok {
		delete(c.old, string(k))
		c.put(string(k), v)
	}
	return v, ok
}

func (c *genCache[V]) put(k string, v V) {
	if prev, ok := c.cur[k]; ok {
		c.bytes -= c.size(k, prev)
	} else {
		delete(c.old, k)
	}
	c.cur[k] = v
	c.bytes += c.size(k, v)
	if c.bytes > c.limit {
		c.old, c.cur, c.bytes = c.cur, make(map[string]V, len(c.cur)), 0
	}
}

func (c *genCache[V]) reset() {
	clear(c.cur)
	clear(c.old)
	c.bytes = 0
}

// rebuildCache is the rebuild's cache of written state (see above).
type rebuildCache struct {
	vals *genCache[cachedValue]
	// hot maps a hot-index prefix (indexPrefix(prefixUserIndex, user)) to
	// the keys under it, in order.
	hot *genCache[[]string]
	// hits and misses count the reads the cache answered and the ones it
	// passed to Pebble (values and hot indexes together).
	hits, misses uint64
}

func newRebuildCache(budget int) *rebuildCache {
	half := max(budget/4, 1) // two caches of two generations
	return &rebuildCache{
		vals: newGenCache(half, func(k string, v cachedValue) int { return len(k) + len(v.val) + cacheEntryOverhead }),
		hot: newGenCache(half, func(k string, v []string) int {
			n := len(k) + cacheEntryOverhead
			for _, s := range v {
				n += len(s) + 16
			}
			return n
		}),
	}
}

// cachedKey reports whether the cache keeps values of key: sessions and
// versions, what nearly every event reads.
func cachedKey(key []byte) bool {
	return len(key) > 0 && (key[0] == prefixSession || key[0] == prefixVersion)
}

// hotPrefixOf is the hot-index prefix a key written under prefixUserIndex
// belongs to: up to its first zero byte. An iteration over that prefix
// returns every key that starts with it, so this is the one list the key
// can be in that the cache keeps (hot only caches lists of prefixes with a
// single zero byte, at their end).
func hotPrefixOf(key []byte) ([]byte, bool) {
	if len(key) == 0 || key[0] != prefixUserIndex {
		return nil, false
	}
	i := bytes.IndexByte(key, 0)
	if i < 0 {
		return nil, false
	}
	return key[:i+1], true
}

// observe takes one entry of a batch the fold wrote.
func (c *rebuildCache) observe(kind pebble.InternalKeyKind, key, value []byte) {
	switch kind {
	case pebble.InternalKeyKindSet, pebble.InternalKeyKindDelete, pebble.InternalKeyKindDeleteSized, pebble.InternalKeyKindSingleDelete:
	default:
		// Nothing in the fold writes anything else; should it, no
		// cached answer can be trusted.
		c.reset()
		return
	}
	set := kind == pebble.InternalKeyKindSet
	if cachedKey(key) {
		if set {
			c.vals.put(string(key), cachedValue{val: slices.Clone(value), present: true})
		} else {
			c.vals.put(string(key), cachedValue{})
		}
	}
	if p, ok := hotPrefixOf(key); ok {
		keys, ok := c.hot.get(p)
		if !ok {
			return // not cached: read from Pebble when asked
		}
		i, found := slices.BinarySearchFunc(keys, key, func(s string, k []byte) int { return bytes.Compare([]byte(s), k) })
		switch {
		case set && !found:
			keys = slices.Insert(slices.Clone(keys), i, string(key))
		case !set && found:
			keys = slices.Delete(slices.Clone(keys), i, i+1)
		default:
			return
		}
		c.hot.put(string(p), keys)
	}
}

func (c *rebuildCache) reset() {
	c.vals.reset()
	c.hot.reset()
}
