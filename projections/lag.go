package projections

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/eventstore"
)

// TrackLag polls the stream's last sequence and publishes how far the local
// projection trails it, until ctx ends.
func (p *Projection) TrackLag(ctx context.Context, store *eventstore.Store, reg prometheus.Registerer, every time.Duration) {
	last := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ledger_stream_last_seq", Help: "Last sequence in the ledger stream, as last seen."})
	lag := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ledger_projection_lag_events", Help: "Stream messages not yet applied to the local projection."})
	if reg != nil {
		reg.MustRegister(last, lag)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, every)
		seq, err := store.LastSeq(qctx)
		cancel()
		if err == nil {
			last.Set(float64(seq))
			applied := p.Applied()
			if seq > applied {
				lag.Set(float64(seq - applied))
			} else {
				lag.Set(0)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
