package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/bits"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/sessionledger/ledger/eventstore"
)

// A rebuild replays the whole stream into an empty projection. Applying an
// event reads before it writes: is this session already there (the same
// session_started under two message ids), does this email belong to
// someone, has this user failed logins to clear, what is the subject's
// version. On replay into an empty store most of those keys do not exist,
// and Pebble answers "not found" only after looking in every memtable and
// level that may hold the key.
//
// Into an EMPTY store, a key exists only if this rebuild wrote it. So a
// rebuild keeps a filter of every key it has written (a Bloom filter:
// false positives, never false negatives), fed from the batch itself (its
// representation is append-only: each lookup first reads the entries added
// since the last one). A lookup of a key the filter has never seen answers
// "not found" without asking Pebble; any other goes to Pebble as before.
// The answers, and so the verdicts and the state, are the same as the
// ordinary path's: only the work to get them changes. A false positive
// costs a Pebble lookup, nothing else. Only the fold's reads go through
// the filter (see Projection.rd), and only ApplyBatch writes what they read;
// the few writes outside it (the rebuild mark, the stream's creation time)
// are keys no fold reads.

// absentFilter is a Bloom filter of the keys written since the projection
// was empty.
type absentFilter struct {
	seed   maphash.Seed
	bits   []uint64
	blocks uint64 // len(bits)/8
	batch  *pebble.Batch
	off    int // how much of batch's representation has been read
	// committed is set once batch is committed.
	committed bool
	// cache, if not nil, is fed the same entries (rebuildcache.go).
	cache *rebuildCache
	// answered and asked count the lookups the filter answered "not
	// found" and the ones it passed to Pebble.
	answered, asked uint64
}

// filterAnswered counts the lookups rebuild filters answered, cacheHits the
// ones rebuild caches answered (for tests).
var filterAnswered, cacheHits atomic.Uint64

// filterHashes is how many bits a key sets.
const filterHashes = 4

// filterBits is the size of a rebuild's filter for about events events
// (some 8 keys each at 8 bits per key), between 1 and 32 MiB: at 8 bits a
// key and 4 hashes in a block, a few percent of the lookups of absent keys
// still go to Pebble.
var filterBits = func(events uint64) uint64 {
	return min(max(events*64, 1<<23), 1<<28)
}

func newAbsentFilter(events uint64) *absentFilter {
	blocks := max(filterBits(events)/512, 1)
	return &absentFilter{seed: maphash.MakeSeed(), bits: make([]uint64, blocks*8), blocks: blocks}
}

// Both set and test filterHashes bits in one 512-bit block (a cache line),
// chosen by the hash: one memory access per key instead of one per bit,
// which on a filter of many MiB is most of its cost, for a slightly higher
// false-positive rate (a false positive costs a lookup, nothing else).
func (f *absentFilter) block(key []byte) (words []uint64, h uint64) {
	h = maphash.Bytes(f.seed, key)
	blk, _ := bits.Mul64(h, f.blocks) // h scaled to [0, blocks)
	return f.bits[blk*8 : blk*8+8 : blk*8+8], h
}

func (f *absentFilter) add(key []byte) {
	w, h := f.block(key)
	g := h * 0x9e3779b97f4a7c15 // the bits in the block: 9 of its top bits each
	for i := range uint64(filterHashes) {
		x := (g >> (55 - 9*i)) & 511
		w[x>>6] |= 1 << (x & 63)
	}
}

func (f *absentFilter) mayHave(key []byte) bool {
	w, h := f.block(key)
	g := h * 0x9e3779b97f4a7c15
	for i := range uint64(filterHashes) {
		x := (g >> (55 - 9*i)) & 511
		if w[x>>6]&(1<<(x&63)) == 0 {
			return false
		}
	}
	return true
}

// begin makes b the batch whose writes the filter follows.
func (f *absentFilter) begin(b *pebble.Batch) {
	f.batch, f.off, f.committed = b, 0, false
}

// end is called once the batch is committed or dropped. The filter may
// keep the keys of a batch that was dropped (a false positive costs a
// lookup), the cache may not: it would answer with writes Pebble never got.
func (f *absentFilter) end() {
	if !f.committed && f.cache != nil {
		f.cache.reset()
	}
	f.begin(nil)
}

// sync adds the keys the batch has written since the last sync. Every kind
// of entry counts (a deletion's key too): the filter only has to hold every
// key that may exist, and more is harmless.
func (f *absentFilter) sync() error {
	if f.batch == nil {
		return nil
	}
	repr := f.batch.Repr()
	if f.off == 0 {
		f.off = batchrepr.HeaderLen
	}
	if f.off >= len(repr) {
		return nil
	}
	r := batchrepr.Reader(repr[f.off:])
	for {
		kind, key, value, ok, err := r.Next()
		if err != nil {
			return fmt.Errorf("read rebuild batch: %w", err)
		}
		if !ok {
			break
		}
		f.add(key)
		if p, ok := hotPrefixOf(key); ok {
			// An iteration over a user's hot index finds nothing
			// unless this prefix was written (see hotKeys); and the
			// first key written under it is all there is under it.
			if !f.mayHave(p) && f.cache != nil {
				f.cache.hot.put(string(p), nil)
			}
			f.add(p)
		}
		if f.cache != nil {
			f.cache.observe(kind, key, value)
		}
	}
	f.off = len(repr)
	return nil
}

// freshReader is the batch as the fold reads it during a rebuild: a key the
// filter has never seen is not there.
type freshReader struct {
	f *absentFilter
	// versions are the versions the batch being applied has set, by
	// subject, not yet written into it (Projection.setVersion): commit
	// writes them, a batch dropped forgets them.
	versions map[string]eventstore.Version
}

func (r *freshReader) Get(key []byte) ([]byte, io.Closer, error) {
	if err := r.f.sync(); err != nil {
		return nil, nil, err
	}
	if !r.f.mayHave(key) {
		r.f.answered++
		return nil, nil, pebble.ErrNotFound
	}
	c := r.f.cache
	if c == nil || !cachedKey(key) {
		r.f.asked++
		return r.f.batch.Get(key)
	}
	if v, ok := c.vals.get(key); ok {
		c.hits++
		if !v.present {
			return nil, nil, pebble.ErrNotFound
		}
		return v.val, noClose{}, nil
	}
	c.misses++
	r.f.asked++
	v, closer, err := r.f.batch.Get(key)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		c.vals.put(string(key), cachedValue{})
	case err == nil:
		c.vals.put(string(key), cachedValue{val: slices.Clone(v), present: true})
	}
	return v, closer, err
}

type noClose struct{}

func (noClose) Close() error { return nil }

// hotKeys are the keys of the user's hot index, in order, as an iterator
// over the batch would find them: from the cache, or from the batch (then
// cached). A user id with a zero byte in it is not cached (hotPrefixOf).
func (r *freshReader) hotKeys(userID string) ([]string, error) {
	if err := r.f.sync(); err != nil {
		return nil, err
	}
	prefix := indexPrefix(prefixUserIndex, userID)
	c := r.f.cache
	if c == nil || strings.IndexByte(userID, 0) >= 0 {
		return iterKeys(r.f.batch, prefix)
	}
	if !r.f.mayHave(prefix) {
		r.f.answered++
		return nil, nil
	}
	if keys, ok := c.hot.get(prefix); ok {
		c.hits++
		return keys, nil
	}
	c.misses++
	r.f.asked++
	keys, err := iterKeys(r.f.batch, prefix)
	if err != nil {
		return nil, err
	}
	c.hot.put(string(prefix), keys)
	return keys, nil
}

func (r *freshReader) NewIter(o *pebble.IterOptions) (*pebble.Iterator, error) {
	return r.f.batch.NewIter(o)
}

// rd is what the fold reads the batch b through: b itself, or during a
// rebuild into an empty store b behind the filter of written keys.
func (p *Projection) rd(b *pebble.Batch) reader {
	if p.fresh == nil {
		return b
	}
	return p.fresh
}

// ErrInterruptedRebuild is what Open answers for a projection a rebuild
// started and did not finish: it must be dropped and rebuilt.
var ErrInterruptedRebuild = errors.New("the projection is an interrupted rebuild: it must be rebuilt from the stream (ledger serve rebuilds it at start; or stop the server and run ledger rebuild)")

// rebuildBatch is how many messages a rebuild applies per Pebble batch.
// Batches of 4096 and 8192 were no faster than 2048 and took 20 and 80 MiB
// more at peak; 1024 was 8-14 % faster than 2048 on the quick bench set
// (two runs each, alternating), with fewer collections: its Pebble batch
// stays under the 1 MB that Pebble's pool keeps for reuse, where a batch
// of 2048 grew a new buffer each time.
var rebuildBatch = 1024

// Rebuild folds the whole stream into this projection, which must be empty
// (just created): the same checks and folds as CatchUp, with the reads of
// keys this rebuild never wrote answered by a filter, and most reads of
// what it wrote by a bounded cache (rebuildcache.go), instead of Pebble. The
// projection is marked as being rebuilt until Rebuild returns, so that Open
// refuses one a crash interrupted (ErrInterruptedRebuild) instead of
// serving whatever part of it the crash kept. A rebuild that returns an
// error (blocked, cancelled) leaves the projection as far as it got, with
// its checkpoint there, as CatchUp would.
func (p *Projection) Rebuild(ctx context.Context, store *eventstore.Reader, progress func(applied, target uint64)) error {
	if p.readOnly {
		return errors.New("rebuild: the projection is open read-only")
	}
	if err := p.checkEmpty(); err != nil {
		return err
	}
	target, err := store.LastSeq(ctx)
	if err != nil {
		return err
	}
	// Written before any batch the rebuild commits, and so durable before
	// any of them: the write-ahead log, or without one (ForRebuild) the
	// memtables, are made durable in order.
	if err := p.db.Set(keyRebuilding, []byte{1}, pebble.NoSync); err != nil {
		return fmt.Errorf("mark rebuild: %w", err)
	}
	p.applyMu.Lock()
	p.fresh = &freshReader{f: newAbsentFilter(target), versions: map[string]eventstore.Version{}}
	p.fresh.f.cache = newRebuildCache(cacheBudget)
	p.fresh.f.add(keyRebuilding)
	p.fresh.f.add(keyLayout)
	p.applyMu.Unlock()
	defer func() {
		p.applyMu.Lock()
		f := p.fresh.f
		p.fresh = nil
		p.applyMu.Unlock()
		filterAnswered.Add(f.answered)
		cacheHits.Add(f.cache.hits)
		p.log.Debug("rebuild: reads answered without Pebble", "never_written", f.answered, "cached", f.cache.hits, "asked_pebble", f.asked)
	}()
	err = p.catchUp(ctx, store, target, rebuildBatch, progress)
	if err == nil && p.Applied() < target {
		err = fmt.Errorf("rebuild: applied %d of %d", p.Applied(), target)
	}
	// What the batches committed is a consistent projection up to its
	// checkpoint whether or not the rebuild got to the end (blocked at a
	// key not held here, cancelled): CatchUp can go on from it as from any
	// other. Only a crash, which leaves the mark, loses it.
	if ferr := p.endRebuild(); ferr != nil {
		return errors.Join(err, ferr)
	}
	return err
}

// endRebuild takes the mark away after every batch, and the flush makes
// it durable with them (without a write-ahead log, see ForRebuild, nothing
// is durable until flushed; memtables are flushed in order): a crash
// before the flush leaves the mark, after it the projection as applied.
func (p *Projection) endRebuild() error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	if err := p.db.Delete(keyRebuilding, pebble.NoSync); err != nil {
		return fmt.Errorf("mark rebuild done: %w", err)
	}
	if err := p.db.Flush(); err != nil {
		return fmt.Errorf("flush rebuild: %w", err)
	}
	return nil
}

// checkEmpty fails unless the projection holds nothing but its layout mark:
// the filter's answers are only right for a store that starts empty.
func (p *Projection) checkEmpty() error {
	if p.Applied() != 0 {
		return fmt.Errorf("rebuild: the projection is not empty (applied %d)", p.Applied())
	}
	it, err := p.db.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if !bytes.Equal(it.Key(), keyLayout) {
			return fmt.Errorf("rebuild: the projection is not empty (it holds %q)", it.Key())
		}
	}
	return it.Error()
}
