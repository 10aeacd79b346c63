package eventstore

import "sync"

// headCache remembers the versions this process last wrote per subject, so a
// fact appended to a subject we just wrote to needs no extra read. A stale
// entry only costs a conflict and a re-read.
type headCache struct {
	mu    sync.Mutex
	max   int
	heads map[string]Version
}

func newHeadCache(max int) *headCache {
	return &headCache{max: max, heads: make(map[string]Version)}
}

func (c *headCache) get(subject string) (Version, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.heads[subject]
	return v, ok
}

func (c *headCache) remember(subject string, v Version) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.heads) >= c.max {
		clear(c.heads) // crude but bounded; entries are only hints
	}
	c.heads[subject] = v
}

func (c *headCache) forget(subject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.heads, subject)
}
