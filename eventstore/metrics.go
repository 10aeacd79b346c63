package eventstore

import "github.com/prometheus/client_golang/prometheus"

var appendsHelp = "Events appended to the ledger stream, by result (ok, duplicate, conflict, error)."

// RegisterMetrics exposes append counters and latency on reg.
func (s *Store) RegisterMetrics(reg prometheus.Registerer) {
	reg.MustRegister(s.appends, s.appendAt)
}

func newAppendCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledger_appends_total", Help: appendsHelp}, []string{"result"})
}

// newAppendLatency times each event appended at a history's version, the
// ones a request waits for (a login, a logout), from the first publish to
// the stream's acknowledgement, retries included: with sync_interval
// always, mostly the fsync. Uses are recorded in the background and are
// not counted.
func newAppendLatency() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ledger_append_duration_seconds",
		Help:    "Time from publishing an event at a history's version to its acknowledgement by the stream, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.00025, 2, 14), // 0.25 ms to ~2 s
	})
}
