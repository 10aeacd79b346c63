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
//
// The loop paces itself (Spread). Recording a use costs the process about
// half a millisecond of CPU on two shared cores at 1M sessions (the
// signature, the fsynced publish through the embedded server, most of it
// the server's, the projection applying it back), and a
// burst of uses (many sessions coming due at once) recorded flat out
// takes that from the validations on the same cores. A use only slides an
// idle deadline of days by at most a granularity, so it can wait seconds.
type UseRecorder struct {
	granularity time.Duration
	spread      time.Duration
	log         useLog
	logger      *slog.Logger

	// The queue holds pointers: a buffer of 65536 events would be 12 MiB
	// the collector scans on every cycle, full or empty.
	queue   chan *queuedUse
	pending sync.Map // session id -> *queuedUse: a use is queued or in flight

	done chan struct{}

	hurry atomic.Int32  // Flush calls waiting: no pacing while > 0
	wake  chan struct{} // wakes a paused loop when Flush starts

	enqueued, handled atomic.Uint64 // uses accepted by Touch, and processed by flush

	queued, dropped, appended, failed prometheus.Counter
}

// UseRecorderConfig configures a UseRecorder.
type UseRecorderConfig struct {
	Granularity time.Duration
	QueueSize   int
	// Spread paces the recording: what is queued is appended at about
	// queued/Spread uses a second, never slower than MinUseRate, so a burst
	// of uses is spread over about Spread rather than recorded as fast as
	// the log takes it. Once the queue is half full there is no pause, so
	// pacing never drops a use the unpaced loop would have kept. 0: no
	// pacing.
	Spread     time.Duration
	Log        useLog
	Logger     *slog.Logger
	Registerer prometheus.Registerer
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
		granularity: c.Granularity, spread: max(c.Spread, 0), log: c.Log, logger: c.Logger,
		queue:    make(chan *queuedUse, c.QueueSize),
		done:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
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
	_, queued, _ := r.touch(s, at)
	return queued
}

// TouchedAt is Touch for validate: it returns the time of the use of s
// that is queued or on its way (queued now, or by an earlier validate), so
// that every validate until the projection applies it answers with the
// deadline it will give. ok is false if there is none (s was used within
// the granularity, or the queue was full).
func (r *UseRecorder) TouchedAt(s *domain.Session, at time.Time) (useAt time.Time, ok bool) {
	useAt, _, ok = r.touch(s, at)
	return useAt, ok
}

// touch reports the time of the use of s queued or on its way, whether
// this call queued it, and whether there is one.
func (r *UseRecorder) touch(s *domain.Session, at time.Time) (useAt time.Time, queued, ok bool) {
	if at.Sub(s.LastUseAt()) < r.granularity {
		return time.Time{}, false, false
	}
	// Load first: while a use waits, every validate of its session finds it
	// here and allocates nothing.
	if u, busy := r.pending.Load(s.ID()); busy {
		return u.(*queuedUse).at, false, true
	}
	u := &queuedUse{userID: s.UserID(), sessionID: s.ID(), at: at}
	if prev, busy := r.pending.LoadOrStore(s.ID(), u); busy {
		return prev.(*queuedUse).at, false, true
	}
	select {
	case r.queue <- u:
		r.enqueued.Add(1)
		r.queued.Inc()
		return at, true, true
	default:
		r.pending.Delete(s.ID())
		r.dropped.Inc()
		return time.Time{}, false, false
	}
}

// queuedUse is a use waiting in the queue; the loop makes it an event.
type queuedUse struct {
	userID, sessionID string
	at                time.Time
}

func (u *queuedUse) event() domain.Event { return domain.SessionUse(u.userID, u.sessionID, u.at) }

// MinUseRate is the slowest a paced recorder appends (uses a second): a
// lone use waits at most a pace tick, and a burst's tail does not crawl.
const MinUseRate = 100

// maxUseBatch is the most uses one flush hands the log.
const maxUseBatch = 512

// paceTick is about how often a paced loop flushes a batch.
const paceTick = 50 * time.Millisecond

// Run appends queued uses until ctx ends, then flushes what is queued.
func (r *UseRecorder) Run(ctx context.Context) {
	defer close(r.done)
	batch := make([]domain.Event, 0, maxUseBatch)
	for {
		select {
		case u := <-r.queue:
			size, rate := r.pace(1 + len(r.queue))
			batch = append(batch[:0], u.event())
		drain:
			for len(batch) < size {
				select {
				case u := <-r.queue:
					batch = append(batch, u.event())
				default:
					break drain
				}
			}
			started := time.Now()
			r.flush(context.WithoutCancel(ctx), batch)
			if rate > 0 {
				r.pause(ctx, time.Duration(float64(len(batch))/rate*float64(time.Second))-time.Since(started))
			}
		case <-ctx.Done():
			for {
				batch = batch[:0]
			rest:
				for len(batch) < maxUseBatch {
					select {
					case u := <-r.queue:
						batch = append(batch, u.event())
					default:
						break rest
					}
				}
				if len(batch) == 0 {
					return
				}
				r.flush(context.WithoutCancel(ctx), batch)
			}
		}
	}
}

// pace decides, with backlog uses queued, how many to flush now and at
// what rate (uses a second; 0: no pause after them).
func (r *UseRecorder) pace(backlog int) (size int, rate float64) {
	if r.spread <= 0 || r.hurry.Load() > 0 || backlog >= cap(r.queue)/2 {
		return maxUseBatch, 0
	}
	rate = max(float64(backlog)/r.spread.Seconds(), MinUseRate)
	size = min(max(int(rate*paceTick.Seconds()), 1), maxUseBatch)
	return size, rate
}

// pause waits d, or less if ctx ends or Flush asks for haste.
func (r *UseRecorder) pause(ctx context.Context, d time.Duration) {
	if d <= 0 || r.hurry.Load() > 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-r.wake:
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
// The loop does not pace itself while a Flush waits.
func (r *UseRecorder) Flush(ctx context.Context) error {
	r.hurry.Add(1)
	defer r.hurry.Add(-1)
	select {
	case r.wake <- struct{}{}:
	default:
	}
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
