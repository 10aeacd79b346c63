package projections

import (
	"crypto/rand"
	"testing"

	"github.com/sessionledger/ledger/domain"
)

// TestSessionCacheHoldsWhatFits: session ids spread evenly over the
// shards, so a cache filled to five eighths of its size evicts nothing
// (each shard then expects 160 of its 256, and 256 is 7.7 standard
// deviations away; the former hash gave some shards 320).
func TestSessionCacheHoldsWhatFits(t *testing.T) {
	const size = 1 << 14
	c := newSessionCache(size)
	ids := make([]string, size*5/8)
	for i := range ids {
		_, id, _, err := domain.NewToken(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
		c.put(domain.SessionSnapshot{ID: ids[i]}, c.gen.Load())
	}
	missing := 0
	for _, id := range ids {
		if _, ok := c.get(id); !ok {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d sessions evicted from a cache of %d", missing, len(ids), size)
	}
}
