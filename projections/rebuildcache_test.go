package projections

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestRebuildCacheAgreesWithTheBatch: through random sets and deletions of
// sessions, versions and hot-index keys, spread over batches that are
// committed or dropped, every read through the rebuild's filter and cache
// answers what the batch itself answers, whatever the cache's budget.
func TestRebuildCacheAgreesWithTheBatch(t *testing.T) {
	for _, budget := range []int{200, 2000, 1 << 20} {
		t.Run(fmt.Sprint(budget), func(t *testing.T) {
			db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: quietPebble{slog.New(slog.DiscardHandler)}})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			f := newAbsentFilter(1000)
			f.cache = newRebuildCache(budget)
			r := &freshReader{f: f}
			rng := rand.New(rand.NewPCG(7, uint64(budget)))
			users := []string{"u0", "u1", "u2", "u3", "u4", "u5"}
			key := func() []byte {
				switch rng.IntN(3) {
				case 0:
					return sessionKey(fmt.Sprint("s", rng.IntN(20)))
				case 1:
					return versionKey(fmt.Sprint("ledger.user.u", rng.IntN(8)))
				default:
					return append(indexPrefix(prefixUserIndex, users[rng.IntN(len(users))]), byte(rng.IntN(4)), 'x', byte(rng.IntN(3)))
				}
			}
			var hits uint64
			for batch := range 60 {
				b := db.NewIndexedBatch()
				f.begin(b)
				for range 40 {
					switch op := rng.IntN(10); {
					case op < 4:
						if err := b.Set(key(), []byte(fmt.Sprint("v", rng.IntN(1000))), nil); err != nil {
							t.Fatal(err)
						}
					case op < 6:
						if err := b.Delete(key(), nil); err != nil {
							t.Fatal(err)
						}
					case op < 8:
						k := key()
						got, gc, gerr := r.Get(k)
						want, wc, werr := b.Get(k)
						if (gerr == nil) != (werr == nil) || (gerr != nil && !errors.Is(gerr, pebble.ErrNotFound)) || !bytes.Equal(got, want) {
							t.Fatalf("batch %d: Get(%q) through the cache: %q, %v; the batch: %q, %v", batch, k, got, gerr, want, werr)
						}
						if gc != nil {
							gc.Close()
						}
						if wc != nil {
							wc.Close()
						}
					default:
						u := users[rng.IntN(len(users))]
						got, err := r.hotKeys(u)
						if err != nil {
							t.Fatal(err)
						}
						want, err := iterKeys(b, indexPrefix(prefixUserIndex, u))
						if err != nil {
							t.Fatal(err)
						}
						if !slices.Equal(got, want) {
							t.Fatalf("batch %d: hot index of %s through the cache: %q; the batch: %q", batch, u, got, want)
						}
					}
				}
				// Most batches commit; some are dropped, as a batch that
				// meets a storage error is.
				if rng.IntN(5) > 0 {
					if err := f.sync(); err != nil {
						t.Fatal(err)
					}
					if err := b.Commit(pebble.NoSync); err != nil {
						t.Fatal(err)
					}
					f.committed = true
				}
				hits = f.cache.hits
				f.end()
				b.Close()
			}
			if hits == 0 {
				t.Error("the cache answered nothing")
			}
			t.Logf("cache hits %d, misses %d", f.cache.hits, f.cache.misses)
		})
	}
}

// TestAbsentFilter: a key added is always found (a false negative would
// make the rebuild take a key that exists for absent); keys never added are
// mostly not.
func TestAbsentFilter(t *testing.T) {
	prev := filterBits
	filterBits = func(uint64) uint64 { return 80_000 * 8 } // 8 bits a key, as a rebuild's
	defer func() { filterBits = prev }()
	f := newAbsentFilter(10_000)
	for i := range 80_000 {
		f.add(fmt.Appendf(nil, "s%d", i))
	}
	for i := range 80_000 {
		if !f.mayHave(fmt.Appendf(nil, "s%d", i)) {
			t.Fatalf("key %d added and not found", i)
		}
	}
	fp := 0
	for i := range 80_000 {
		if f.mayHave(fmt.Appendf(nil, "t%d", i)) {
			fp++
		}
	}
	t.Logf("false positives: %d of 80000", fp)
	if fp > 8_000 {
		t.Errorf("%d of 80000 keys never added pass the filter", fp)
	}
}
