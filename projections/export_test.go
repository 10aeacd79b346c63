package projections

// SetCheckWorkers makes large batches check their messages ahead on n
// workers (whatever GOMAXPROCS is) until the returned func restores it.
func SetCheckWorkers(n int) (restore func()) {
	prev := checkWorkers
	checkWorkers = func() int { return n }
	return func() { checkWorkers = prev }
}

// PipelinesStarted counts the batches whose messages were checked ahead.
func PipelinesStarted() uint64 { return pipelinesStarted.Load() }

// SetRebuild makes Rebuild apply batches of batch messages with a filter of
// bits bits (0: the usual size) until the returned func restores them.
func SetRebuild(batch int, bits uint64) (restore func()) {
	prevBatch, prevBits := rebuildBatch, filterBits
	rebuildBatch = batch
	if bits > 0 {
		filterBits = func(uint64) uint64 { return bits }
	}
	return func() { rebuildBatch, filterBits = prevBatch, prevBits }
}

// FilterAnswered counts the reads rebuild filters answered without Pebble.
func FilterAnswered() uint64 { return filterAnswered.Load() }

// SetRebuildCache gives rebuilds a cache of budget bytes until the returned
// func restores it.
func SetRebuildCache(budget int) (restore func()) {
	prev := cacheBudget
	cacheBudget = budget
	return func() { cacheBudget = prev }
}

// CacheHits counts the reads rebuild caches answered.
func CacheHits() uint64 { return cacheHits.Load() }

// InSessionCache reports whether the validate cache holds the session.
func (p *Projection) InSessionCache(id string) bool {
	_, ok := p.cache.get(id)
	return ok
}
