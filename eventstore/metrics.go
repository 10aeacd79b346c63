package eventstore

import "github.com/prometheus/client_golang/prometheus"

var appendsHelp = "Events appended to the ledger stream, by result (ok, duplicate, conflict, error)."

// RegisterMetrics exposes append counters on reg.
func (s *Store) RegisterMetrics(reg prometheus.Registerer) {
	reg.MustRegister(s.appends)
}

func newAppendCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledger_appends_total", Help: appendsHelp}, []string{"result"})
}
