package query

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// useLog records uses where they need no head of their user's history
// (the event store puts each on the user's use subject, standalone): a
// recorder reads nothing to record one.
type useLog interface {
	RecordUses(ctx context.Context, facts []ports.Fact) (int, error)
}

// UseRecorder turns validations into session_used events, at most one per
// session per granularity. The idle deadline therefore runs from the last
// recorded use, which is at most one granularity earlier than the last real
// use. Touch never blocks: uses go into a bounded queue, a background loop
// appends them in batches, and a full queue drops the use and
// counts it rather than slowing validation down.
type UseRecorder struct {
	granularity time.Duration
	log         useLog
	logger      *slog.Logger

	// Pointers: a channel's buffer is allocated whole, and 65536 events by
	// value are 12.8 MiB of pointer fields that every garbage collection
	// scans, queued or not (with pointers: 512 KiB). Logins, with their
	// 19 MiB hashes, start a collection every few requests; a login run
	// kept 37 MB live after each instead of 48-51.
	queue   chan *domain.Event
	pending sync.Map // session id -> struct{}: a use is queued or in flight

	done chan struct{}

	enqueued, handled atomic.Uint64 // uses accepted by Touch, and processed by flush

	queued, dropped, appended, failed prometheus.Counter
}

// UseRecorderConfig configures a UseRecorder.
type UseRecorderConfig struct {
	Granularity time.Duration
	QueueSize   int
	Log         useLog
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

func NewUseRecorder(c UseRecorderConfig) (*UseRecorder, error) {
	if c.Log == nil {
		return nil, errors.New("query.NewUseRecorder: a log is required")
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 65536
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	counter := func(name, help string) prometheus.Counter {
		cnt := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		if c.Registerer != nil {
			c.Registerer.MustRegister(cnt)
		}
		return cnt
	}
	return &UseRecorder{
		granularity: c.Granularity, log: c.Log, logger: c.Logger,
		queue:    make(chan *domain.Event, c.QueueSize),
		done:     make(chan struct{}),
		queued:   counter("ledger_uses_queued_total", "Session uses queued for recording."),
		dropped:  counter("ledger_uses_dropped_total", "Session uses dropped because the queue was full."),
		appended: counter("ledger_uses_appended_total", "session_used events appended to the stream."),
		failed:   counter("ledger_uses_failed_total", "session_used events whose append failed."),
	}, nil
}

// Touch queues a use of s at `at` if the last recorded use is at least one
// granularity old and none is already on its way. It reports whether it
// queued one.
func (r *UseRecorder) Touch(s *domain.Session, at time.Time) bool {
	if at.Sub(s.LastUseAt()) < r.granularity {
		return false
	}
	if _, busy := r.pending.LoadOrStore(s.ID(), struct{}{}); busy {
		return false
	}
	e := domain.SessionUse(s.UserID(), s.ID(), at)
	select {
	case r.queue <- &e:
		r.enqueued.Add(1)
		r.queued.Inc()
		return true
	default:
		r.pending.Delete(s.ID())
		r.dropped.Inc()
		return false
	}
}

// Run appends queued uses until ctx ends, then flushes what is queued.
func (r *UseRecorder) Run(ctx context.Context) {
	defer close(r.done)
	const maxBatch = 512
	batch := make([]domain.Event, 0, maxBatch)
	for {
		select {
		case e := <-r.queue:
			batch = append(batch[:0], *e)
		drain:
			for len(batch) < maxBatch {
				select {
				case e := <-r.queue:
					batch = append(batch, *e)
				default:
					break drain
				}
			}
			r.flush(context.WithoutCancel(ctx), batch)
		case <-ctx.Done():
			for {
				select {
				case e := <-r.queue:
					r.flush(context.WithoutCancel(ctx), []domain.Event{*e})
				default:
					return
				}
			}
		}
	}
}

// Wait returns once Run has flushed and returned.
func (r *UseRecorder) Wait() { <-r.done }

func (r *UseRecorder) flush(ctx context.Context, events []domain.Event) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	facts := make([]ports.Fact, len(events))
	for i, e := range events {
		facts[i] = ports.Fact{Event: e, DedupKey: r.dedupKey(e)}
	}
	stored, err := r.log.RecordUses(ctx, facts)
	r.appended.Add(float64(stored))
	if err != nil {
		r.failed.Add(float64(len(events) - stored))
		r.logger.Warn("recording session uses failed", "batch", len(events), "stored", stored, "err", err)
	}
	for _, e := range events {
		r.pending.Delete(e.SessionID)
	}
	r.handled.Add(uint64(len(events)))
}

// Flush waits until every use queued before the call has been appended (or
// has failed), so a caller can then wait for the projection to apply them.
func (r *UseRecorder) Flush(ctx context.Context) error {
	target := r.enqueued.Load()
	for r.handled.Load() < target {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// dedupKey is shared by every instance recording a use of the same session
// in the same granularity bucket, so the log keeps only one of them.
func (r *UseRecorder) dedupKey(e domain.Event) string {
	if r.granularity <= 0 {
		return ""
	}
	return "use:" + e.SessionID + ":" + strconv.FormatInt(e.Time.UnixNano()/int64(r.granularity), 10)
}
