package eventstore

// Speculate makes Verify check heads ahead once they have stayed put for
// lag messages, looking at every message, in batches of batch, each
// batch's verdicts taken in at the next message (so which heads are
// checked ahead does not depend on timing). It returns the restore.
func Speculate(lag uint64, batch int) (restore func()) {
	old := specTuning
	specTuning.lag, specTuning.every, specTuning.batch, specTuning.sync = lag, 1, batch, true
	return func() { specTuning = old }
}
