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
