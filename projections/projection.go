package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// Projection is the Pebble-backed read model of the ledger.
type Projection struct {
	db      *pebble.DB
	log     *slog.Logger
	metrics *metrics

	applyMu sync.Mutex // one writer: the live router or a bulk read
	written []string   // sessions the current batch writes (under applyMu)
	cache   *sessionCache

	mu      sync.Mutex
	applied uint64
	digest  eventstore.StreamDigest // at applied; only the applier touches it
	advance chan struct{}           // closed and replaced each time applied grows
}

type metrics struct {
	appliedSeq prometheus.Gauge
	applied    *prometheus.CounterVec
	skipped    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		appliedSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ledger_projection_applied_seq", Help: "Last stream sequence applied to the local projection."}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_projection_events_applied_total", Help: "Events folded into the projection, by type."}, []string{"type"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledger_projection_events_skipped_total", Help: "Stream messages that could not be decoded or applied and were recorded and skipped."}),
	}
	if reg != nil {
		reg.MustRegister(m.appliedSeq, m.applied, m.skipped)
	}
	return m
}

// Option tunes Open.
type Option func(*pebble.Options)

// WithBlockCache gives Pebble a block cache of this many bytes instead of
// its 8 MiB default: worth it for a bulk rebuild, whose reads-before-writes
// otherwise decompress the same blocks over and over.
func WithBlockCache(bytes int64) Option {
	return func(o *pebble.Options) { o.CacheSize = bytes }
}

// Open opens (or creates) the projection in dir and reads its checkpoint.
func Open(dir string, log *slog.Logger, reg prometheus.Registerer, options ...Option) (*Projection, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &pebble.Options{Logger: quietPebble{log}}
	for _, o := range options {
		o(opts)
	}
	// Applying an event often looks up keys that do not exist yet (a new
	// session, a new email); bloom filters answer those without reading
	// blocks.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open projection %s: %w", dir, err)
	}
	p := &Projection{db: db, log: log, metrics: newMetrics(reg), advance: make(chan struct{}), cache: newSessionCache(SessionCacheSize)}
	v, closer, err := db.Get(keyApplied)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		db.Close()
		return nil, fmt.Errorf("read checkpoint: %w", err)
	default:
		p.applied, err = decodeUint64(v)
		closer.Close()
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("read checkpoint: %w", err)
		}
	}
	if v, closer, err := db.Get(keyDigest); err == nil {
		copy(p.digest[:], v)
		closer.Close()
	}
	p.metrics.appliedSeq.Set(float64(p.applied))
	return p, nil
}

// Close flushes memtables to disk and closes the database.
func (p *Projection) Close() error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	if err := p.db.Flush(); err != nil {
		p.db.Close()
		return fmt.Errorf("flush projection: %w", err)
	}
	return p.db.Close()
}

// Applied is the last stream sequence folded into the projection.
func (p *Projection) Applied() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// WaitFor blocks until the projection has applied seq, so a write request
// can answer only once its own event is visible to the next read here.
func (p *Projection) WaitFor(ctx context.Context, seq uint64) error {
	for {
		p.mu.Lock()
		applied, ch := p.applied, p.advance
		p.mu.Unlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("projection at %d, waiting for %d: %w", applied, seq, ctx.Err())
		}
	}
}

func (p *Projection) setApplied(seq uint64) {
	p.mu.Lock()
	p.applied = seq
	close(p.advance)
	p.advance = make(chan struct{})
	p.mu.Unlock()
	p.metrics.appliedSeq.Set(float64(seq))
}

// ApplyBatch folds stored messages, in stream order, into one Pebble batch
// together with the new checkpoint, and commits it. Messages at or below the
// checkpoint are ignored, which makes redelivery harmless. A message that
// cannot be decoded is recorded under its sequence and skipped rather than
// stopping the projection: the log cannot be fixed, the service must go on.
func (p *Projection) ApplyBatch(recs []eventstore.Record) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	last := p.Applied()
	digest := p.digest
	b := p.db.NewIndexedBatch()
	defer b.Close()
	applied := make(map[domain.EventType]int)
	p.written = p.written[:0]
	for _, r := range recs {
		if r.Seq <= last {
			continue
		}
		e, err := p.apply(b, r)
		t := e.Type
		if err != nil {
			p.metrics.skipped.Inc()
			p.log.Error("projection: skipping message", "seq", r.Seq, "subject", r.Subject, "err", err)
			if err := b.Set(skippedKey(r.Seq), []byte(err.Error()), nil); err != nil {
				return err
			}
		} else {
			applied[t]++
		}
		if uid, ok := eventstore.UserOfSubject(r.Subject); ok {
			head := e.Hash
			if head == "" {
				head = eventstore.HeadOf(r.Data)
			}
			v := eventstore.Version{Seq: r.Seq, Head: head}
			if err := b.Set(versionKey(uid), encodeVersion(v), nil); err != nil {
				return err
			}
		}
		digest = digest.Next(r)
		if r.Seq%eventstore.DigestEvery == 0 {
			if err := b.Set(digestKey(r.Seq), digest[:], nil); err != nil {
				return err
			}
		}
		last = r.Seq
	}
	if last == p.Applied() {
		return nil
	}
	if err := b.Set(keyApplied, encodeUint64(last), nil); err != nil {
		return err
	}
	if err := b.Set(keyDigest, digest[:], nil); err != nil {
		return err
	}
	// NoSync: the stream is the durable copy. A crash loses at most a tail
	// of the projection together with its checkpoint, and that tail is read
	// again from the stream on start.
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit projection batch: %w", err)
	}
	for t, n := range applied {
		p.metrics.applied.WithLabelValues(string(t)).Add(float64(n))
	}
	p.digest = digest
	p.cache.invalidate(p.written)
	p.setApplied(last)
	return nil
}

// apply folds one message into the batch and returns the decoded event.
func (p *Projection) apply(b *pebble.Batch, r eventstore.Record) (domain.Event, error) {
	e, err := domain.DecodeEvent(r.Data)
	if err != nil {
		return domain.Event{}, err
	}
	switch e.Type {
	case domain.EventUserRegistered:
		return e, applyUserRegistered(b, e)
	case domain.EventSessionStarted:
		s, err := domain.SessionFromEvent(e)
		if err != nil {
			return e, err
		}
		if _, err := getSession(b, e.SessionID); err == nil {
			return e, nil // already applied under another message id
		}
		if err := p.putSession(b, s); err != nil {
			return e, err
		}
		return e, b.Set(userIndexKey(e.UserID, e.SessionID), nil, nil)
	case domain.EventSessionUsed, domain.EventSessionLoggedOut, domain.EventSessionTerminated:
		s, err := getSession(b, e.SessionID)
		if errors.Is(err, domain.ErrSessionNotFound) {
			return e, fmt.Errorf("event %s: %w: %s", e.ID, err, e.SessionID)
		}
		if err != nil {
			return e, err
		}
		if err := s.Apply(e); err != nil {
			return e, err
		}
		return e, p.putSession(b, s)
	case domain.EventOtherSessionsRevoked:
		sessions, err := userSessions(b, e.UserID)
		if err != nil {
			return e, err
		}
		for _, s := range sessions {
			if err := s.Apply(e); err != nil {
				return e, err
			}
			if err := p.putSession(b, s); err != nil {
				return e, err
			}
		}
		return e, nil
	default: // email_claimed, login_failed: facts for the audit trail only
		return e, nil
	}
}

func applyUserRegistered(b *pebble.Batch, e domain.Event) error {
	p, err := domain.DecodePayload[domain.UserRegistered](e)
	if err != nil {
		return err
	}
	if _, closer, err := b.Get(emailKey(p.Email)); err == nil {
		closer.Close()
		// The claim protocol lets only one registration per email reach
		// the log; should another ever appear, the first one keeps it.
		return fmt.Errorf("event %s: email already belongs to another user", e.ID)
	}
	if err := b.Set(userKey(e.UserID), mustJSON(userRecord{Email: p.Email, PasswordHash: p.PasswordHash, RegisteredAt: e.Time}), nil); err != nil {
		return err
	}
	return b.Set(emailKey(p.Email), mustJSON(emailRecord{UserID: e.UserID, PasswordHash: p.PasswordHash}), nil)
}

func (p *Projection) putSession(b *pebble.Batch, s *domain.Session) error {
	p.written = append(p.written, s.ID())
	return b.Set(sessionKey(s.ID()), encodeSession(s.Snapshot()), nil)
}

// reader is what both the database, a snapshot and a batch offer.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func getSession(r reader, id string) (*domain.Session, error) {
	v, closer, err := r.Get(sessionKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, domain.ErrSessionNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	defer closer.Close()
	snap, err := decodeSession(id, v)
	if err != nil {
		return nil, fmt.Errorf("session %s: %w", id, err)
	}
	return domain.SessionFromSnapshot(snap), nil
}

func userSessions(r reader, userID string) ([]*domain.Session, error) {
	prefix := userIndexPrefix(userID)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	var ids []string
	for ok := it.First(); ok; ok = it.Next() {
		ids = append(ids, string(it.Key()[len(prefix):]))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	out := make([]*domain.Session, 0, len(ids))
	for _, id := range ids {
		s, err := getSession(r, id)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func getJSON(r reader, key []byte, v any) error {
	raw, closer, err := r.Get(key)
	if err != nil {
		return err
	}
	defer closer.Close()
	return json.Unmarshal(raw, v)
}
