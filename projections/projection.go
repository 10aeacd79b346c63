package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/handlers/ports"
)

// Projection is the Pebble-backed read model of the ledger.
type Projection struct {
	db       *pebble.DB
	readOnly bool // opened with ReadOnly: nothing is written, not even at Close
	log      *slog.Logger
	metrics  *metrics

	applyMu sync.Mutex               // one writer: the live router or a bulk read
	written []domain.SessionSnapshot // sessions the current batch writes, in order (under applyMu)
	checks  []checked                // a large batch's checks done ahead (under applyMu; precheck.go)
	inline  checked                  // a small batch's checks of the message at hand (under applyMu)
	// fresh, during a rebuild into an empty store, answers the fold's
	// reads of keys the rebuild never wrote (under applyMu; rebuild.go).
	fresh *freshReader
	// current is the checks of the message being applied (under applyMu).
	current *checked
	cache   *sessionCache
	// roles are the users whose role is not the default, in memory so that
	// validate answers with a role without a read; roleChanges are the
	// current batch's (under applyMu), published when it commits.
	rolesMu     sync.RWMutex
	roles       map[string]domain.Role
	roleChanges map[string]domain.Role

	// keys verifies MACs; chain is the log's key history as applied (only
	// the applier touches it; SigningKey reads it under keyMu).
	keys  *domain.Keyring
	keyMu sync.RWMutex
	chain *domain.KeyChain
	// blocked is why the projection cannot move past its checkpoint (a gap
	// in the stream, the key in force not held here); nil when it can.
	blocked atomic.Pointer[error]

	mu      sync.Mutex
	applied uint64
	digest  eventstore.StreamDigest // at applied; only the applier touches it
	advance chan struct{}           // closed and replaced each time applied grows
}

type metrics struct {
	appliedSeq prometheus.Gauge
	applied    *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	// cacheMisses counts session reads the cache did not answer: each is
	// a Pebble read, which at 1M sessions costs a validate far more than
	// a hit does.
	cacheMisses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		appliedSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ledger_projection_applied_seq", Help: "Last stream sequence applied to the local projection."}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_projection_events_applied_total", Help: "Events folded into the projection, by type."}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_events_rejected_total", Help: "Stream messages not applied because they are not trustworthy (decode, hash, signature, chain) or the rules refuse them (invalid)."}, []string{"reason"}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledger_session_cache_misses_total", Help: "Session reads (validate, logout) the in-memory session cache did not answer, read from Pebble instead."}),
	}
	for _, r := range []string{RejectDecode, RejectHash, RejectSignature, RejectChain, RejectInvalid} {
		m.rejected.WithLabelValues(r) // export zeros, so alerts need no absent()
	}
	if reg != nil {
		reg.MustRegister(m.appliedSeq, m.applied, m.rejected, m.cacheMisses)
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

// ForRebuild tunes Pebble for writing a whole projection at once (ledger
// rebuild): larger memtables (fewer, larger flushes and so fewer
// compactions) and no write-ahead log (a rebuild a crash interrupts is
// refused at Open and done again, see Rebuild). Compactions keep their
// usual thresholds: letting L0 grow to 32 files saved nothing on 125k
// events and cost a third more CPU on 1.25M, where every read and every
// iterator of the fold goes through each L0 file.
func ForRebuild() Option {
	return func(o *pebble.Options) {
		o.MemTableSize = 32 << 20
		o.DisableWAL = true
	}
}

// ReadOnly opens an existing projection for reading only (an auditor's
// lookups in a stopped server's data dir): nothing is written, and a
// projection that does not exist, or would need a write to be opened, is
// an error.
func ReadOnly() Option {
	return func(o *pebble.Options) { o.ReadOnly = true }
}

// Open opens (or creates) the projection in dir and reads its checkpoint.
// keys are the signing keys this instance holds: every event is checked
// against them before it is applied.
func Open(dir string, keys *domain.Keyring, log *slog.Logger, reg prometheus.Registerer, options ...Option) (*Projection, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if keys == nil {
		return nil, errors.New("open projection: no signing keys to verify events with")
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
	var applied uint64
	v, closer, err := db.Get(keyApplied)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		db.Close()
		return nil, fmt.Errorf("read checkpoint: %w", err)
	default:
		applied, err = decodeUint64(v)
		closer.Close()
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("read checkpoint: %w", err)
		}
	}
	if err := checkLayout(db, dir, applied); err != nil {
		db.Close()
		return nil, err
	}
	switch _, closer, err := db.Get(keyRebuilding); {
	case err == nil:
		closer.Close()
		db.Close()
		return nil, fmt.Errorf("open projection %s: %w", dir, ErrInterruptedRebuild)
	case !errors.Is(err, pebble.ErrNotFound):
		db.Close()
		return nil, fmt.Errorf("read rebuild mark: %w", err)
	}
	p := &Projection{db: db, readOnly: opts.ReadOnly, log: log, metrics: newMetrics(reg), advance: make(chan struct{}), cache: newSessionCache(SessionCacheSize), keys: keys, chain: &domain.KeyChain{}}
	p.applied = applied
	if p.roles, err = loadRoles(db); err != nil {
		db.Close()
		return nil, err
	}
	p.roleChanges = map[string]domain.Role{}
	if v, closer, err := db.Get(keyDigest); err == nil {
		copy(p.digest[:], v)
		closer.Close()
	}
	var state domain.KeyChainState
	switch err := getJSON(db, keyKeyChain, &state); {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		db.Close()
		return nil, fmt.Errorf("read key chain: %w", err)
	default:
		if p.chain, err = domain.KeyChainFromState(state); err != nil {
			db.Close()
			return nil, fmt.Errorf("read key chain: %w", err)
		}
	}
	p.metrics.appliedSeq.Set(float64(p.applied))
	return p, nil
}

// LayoutError is what Open answers for a projection written under another
// key layout (see LayoutVersion): reading it would misread its state, so it
// must be dropped and rebuilt from the stream.
type LayoutError struct {
	Dir         string
	Found, Want uint64
	Applied     uint64 // what the old projection had applied
}

func (e *LayoutError) Error() string {
	return fmt.Sprintf("projection %s has key layout %d, this version reads layout %d: it must be rebuilt from the stream "+
		"(ledger serve rebuilds it at start; or stop the server and run ledger rebuild)", e.Dir, e.Found, e.Want)
}

// checkLayout accepts a projection of LayoutVersion, and marks a new one
// (nothing applied yet) as such.
func checkLayout(db *pebble.DB, dir string, applied uint64) error {
	v, closer, err := db.Get(keyLayout)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if applied > 0 {
			return &LayoutError{Dir: dir, Found: 1, Want: LayoutVersion, Applied: applied}
		}
		// NoSync: the log orders it before any checkpoint a crash could keep.
		if err := db.Set(keyLayout, encodeUint64(LayoutVersion), pebble.NoSync); err != nil {
			return fmt.Errorf("write projection layout: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read projection layout: %w", err)
	}
	found, err := decodeUint64(v)
	closer.Close()
	if err != nil {
		return fmt.Errorf("read projection layout: %w", err)
	}
	if found != LayoutVersion {
		return &LayoutError{Dir: dir, Found: found, Want: LayoutVersion, Applied: applied}
	}
	return nil
}

// Close flushes memtables to disk and closes the database.
func (p *Projection) Close() error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	if p.readOnly {
		return p.db.Close()
	}
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

// Rejection reasons: why a stored message was not applied.
const (
	RejectDecode    = domain.RejectDecode
	RejectHash      = domain.RejectHash
	RejectSignature = domain.RejectSignature
	RejectChain     = domain.RejectChain
	RejectInvalid   = domain.RejectInvalid
)

// rejection is a verdict on a message, as opposed to a failure to reach a
// verdict (a storage error), which must never move the checkpoint.
type rejection struct {
	reason string
	err    error
}

func (r *rejection) Error() string { return r.reason + ": " + r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

func reject(reason string, err error) error { return &rejection{reason: reason, err: err} }

// ErrBlocked means the projection cannot apply the next message yet and
// will not skip it: the stream has a gap there, or the message is signed by
// a key in force that this instance does not hold.
var ErrBlocked = errors.New("projection blocked")

// ApplyBatch folds stored messages, in stream order, into one Pebble batch
// together with the new checkpoint, and commits it. Messages at or below the
// checkpoint are ignored, which makes redelivery harmless.
//
// Before a message changes any state it must decode, match its hash, be
// authenticated by the signing key in force, and link to its subject's last
// authentic event. A message that fails is rejected: recorded under its
// sequence with the reason, counted, logged, and passed over by the
// checkpoint; it does not become its subject's head, so the subject's next
// legitimate event still links and applies. Anything else that goes wrong
// (a storage error, a gap in the sequences, a key this instance lacks)
// fails the batch without committing it, so the checkpoint never passes an
// event that was neither applied nor rejected.
func (p *Projection) ApplyBatch(recs []eventstore.Record) error {
	return p.applyBatch(recs, nil)
}

// applyBatch is ApplyBatch; pre, if not nil, is the checks of all of recs
// already under way (catchUp starts them as it reads, ahead of the apply).
func (p *Projection) applyBatch(recs []eventstore.Record, pre *checkPipeline) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	last := p.Applied()
	digest := p.digest
	keys := keyChainTx{chain: p.chain}
	b := p.db.NewIndexedBatch()
	defer b.Close()
	if p.fresh != nil {
		p.fresh.f.begin(b)
		defer func() { // every batch starts with no versions held back
			clear(p.fresh.versions)
			p.fresh.f.end()
		}()
	}
	applied := make(map[domain.EventType]int)
	rejected := make(map[string]int)
	p.written = p.written[:0]
	clear(p.roleChanges)
	var blocked error
	// Decoding, hashing and the MAC under the kid a message names need no
	// order: a large batch has them done ahead, on every core (precheck.go).
	// Everything else below goes in stream order.
	start := 0
	for start < len(recs) && recs[start].Seq <= last {
		start++
	}
	ahead, aheadFrom := pre, 0
	if pre == nil {
		ahead, aheadFrom = p.startChecks(recs[start:], p.checks), start
		if ahead != nil {
			defer func() { p.checks = ahead.close() }()
		}
	}
	for i, r := range recs {
		if r.Seq <= last {
			continue
		}
		if r.Seq != last+1 {
			blocked = fmt.Errorf("%w: sequence %d follows %d: %w", ErrBlocked, r.Seq, last, eventstore.ErrStreamTampered)
			break
		}
		var c *checked
		if ahead != nil && i >= aheadFrom {
			c = ahead.get(i - aheadFrom)
		} else {
			p.inline = p.check(r.Data)
			c = &p.inline
		}
		e, err := p.apply(b, &keys, r, c)
		var rej *rejection
		switch {
		case err == nil:
			applied[e.Type]++
		case errors.Is(err, domain.ErrKeyUnavailable):
			blocked = fmt.Errorf("%w at sequence %d: %w", ErrBlocked, r.Seq, err)
		case errors.As(err, &rej):
			rejected[rej.reason]++
			p.log.Error("projection: event rejected", "seq", r.Seq, "subject", r.Subject, "event_id", e.ID, "reason", rej.reason, "err", rej.err)
			if err := b.Set(rejectedKey(r.Seq), mustJSON(Rejected{Seq: r.Seq, Subject: r.Subject, EventID: e.ID, Reason: rej.reason, Detail: rej.err.Error()}), nil); err != nil {
				return err
			}
		default:
			return fmt.Errorf("apply seq %d: %w", r.Seq, err) // storage: retry, never skip
		}
		if blocked != nil {
			break
		}
		digest = digest.Next(r)
		if r.Seq%eventstore.DigestEvery == 0 {
			if err := b.Set(digestKey(r.Seq), digest[:], nil); err != nil {
				return err
			}
		}
		last = r.Seq
	}
	if n := sum(rejected); n > 0 {
		total, err := p.rejectedTotal(b)
		if err != nil {
			return err
		}
		if err := b.Set(keyRejected, encodeUint64(total+uint64(n)), nil); err != nil {
			return err
		}
	}
	if last > p.Applied() {
		if err := p.commit(b, last, digest, keys); err != nil {
			return err
		}
		for t, n := range applied {
			p.metrics.applied.WithLabelValues(string(t)).Add(float64(n))
		}
		for r, n := range rejected {
			p.metrics.rejected.WithLabelValues(r).Add(float64(n))
		}
	}
	if blocked != nil {
		if prev := p.blocked.Swap(&blocked); prev == nil || (*prev).Error() != blocked.Error() {
			p.log.Error("projection cannot apply the next message and will not skip it", "applied", p.Applied(), "err", blocked)
		}
		return blocked
	}
	p.blocked.Store(nil)
	return nil
}

func (p *Projection) commit(b *pebble.Batch, last uint64, digest eventstore.StreamDigest, keys keyChainTx) error {
	if err := b.Set(keyApplied, encodeUint64(last), nil); err != nil {
		return err
	}
	if err := b.Set(keyDigest, digest[:], nil); err != nil {
		return err
	}
	if keys.changed {
		if err := b.Set(keyKeyChain, mustJSON(keys.chain.State()), nil); err != nil {
			return err
		}
	}
	if p.fresh != nil {
		for subject, v := range p.fresh.versions {
			if err := b.Set(versionKey(subject), encodeVersion(v), nil); err != nil {
				return err
			}
		}
		// During a rebuild, the filter must hold every key committed.
		if err := p.fresh.f.sync(); err != nil {
			return err
		}
	}
	// NoSync: the stream is the durable copy. A crash loses at most a tail
	// of the projection together with its checkpoint, and that tail is read
	// again from the stream on start.
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit projection batch: %w", err)
	}
	if p.fresh != nil {
		p.fresh.f.committed = true
	}
	p.digest = digest
	if keys.changed {
		p.keyMu.Lock()
		p.chain = keys.chain
		p.keyMu.Unlock()
	}
	p.cache.update(p.written)
	if len(p.roleChanges) > 0 {
		p.rolesMu.Lock()
		for u, r := range p.roleChanges {
			if r == domain.RoleUser {
				delete(p.roles, u)
			} else {
				p.roles[u] = r
			}
		}
		p.rolesMu.Unlock()
	}
	p.setApplied(last)
	return nil
}

// Blocked reports why the projection cannot move past its checkpoint, or
// nil.
func (p *Projection) Blocked() error {
	if e := p.blocked.Load(); e != nil {
		return *e
	}
	return nil
}

// keyChainTx is a batch's view of the key chain: the committed chain until
// a key event (the only kind Authenticate folds) needs to change it, then a
// private copy, committed with the batch. Batches without key events, which
// is nearly all of them, neither copy nor rewrite it.
type keyChainTx struct {
	chain   *domain.KeyChain // only the applier, under applyMu, reads p.chain unlocked
	changed bool
}

func (t *keyChainTx) forEvent(e domain.Event) *domain.KeyChain {
	if !t.changed && (e.Type == domain.EventSigningKeyIntroduced || e.Type == domain.EventSigningKeyRotated) {
		t.chain, _ = domain.KeyChainFromState(t.chain.State()) // keys it holds are well-formed
		t.changed = true
	}
	return t.chain
}

// SigningKey is the key to sign new events with: the one the log has put in
// force as far as this projection has applied it. It fails with
// domain.ErrKeyUnavailable if this instance does not hold it, or before the
// log has introduced any key.
func (p *Projection) SigningKey() (domain.SigningKey, error) {
	p.keyMu.RLock()
	active := p.chain.Active
	p.keyMu.RUnlock()
	if active == "" {
		return domain.SigningKey{}, fmt.Errorf("%w: the log has not introduced a signing key yet", domain.ErrKeyUnavailable)
	}
	k, ok := p.keys.Key(active)
	if !ok {
		return domain.SigningKey{}, fmt.Errorf("%w: key %s is in force but not among this instance's signing keys", domain.ErrKeyUnavailable, active)
	}
	return k, nil
}

// KeyChain is the log's key history as applied: the keys in force, in
// order.
func (p *Projection) KeyChain() []domain.PublicKey {
	p.keyMu.RLock()
	defer p.keyMu.RUnlock()
	return append([]domain.PublicKey(nil), p.chain.Order...)
}

// apply checks one message and folds it into the batch. c is what its
// order-independent checks found (decoding, its hash, perhaps its MAC under
// the key it names); the rest is judged here, in stream order. It returns a
// *rejection for a message it will not apply, domain.ErrKeyUnavailable if it
// cannot tell, and any other error for a failure to read or write state.
func (p *Projection) apply(b *pebble.Batch, keys *keyChainTx, r eventstore.Record, c *checked) (domain.Event, error) {
	if userID, ok := eventstore.UseSubjectUser(r.Subject); ok {
		return p.applyUse(b, keys, r, c, userID)
	}
	v, err := p.version(b, r.Subject)
	if err != nil {
		return domain.Event{}, err
	}
	// Whatever the message, the subject's next append expects it as the
	// subject's last sequence; only an authentic event moves the head. A
	// message that cannot be judged here (the key in force is not held)
	// writes nothing: the batch may still commit what came before it.
	v.Seq = r.Seq
	e := c.e
	p.current = c
	defer func() { p.current = nil }()
	var verdict error
	if c.decErr != nil {
		verdict = reject(RejectDecode, c.decErr)
	} else {
		verifier := precheckedVerifier{keys: p.keys, c: c}
		switch reason, err := domain.JudgeHashed(e, c.hashErr, v.Head, func(e domain.Event) error { return keys.forEvent(e).Authenticate(e, verifier) }); {
		case reason != "":
			verdict = reject(reason, err)
		case err != nil:
			return e, err // the key in force is not held here: wait, do not judge
		}
	}
	if verdict != nil {
		if err := p.setVersion(b, r.Subject, v); err != nil {
			return e, err
		}
		return e, verdict
	}
	// From here the event is the ledger's own: it is the subject's head
	// even if the rules below refuse it. The subject's time never goes
	// backwards, even if an event's does: the next decision is made no
	// earlier than it (domain.NextEventTime), and so never earlier than a
	// pruning of the user's hot sessions (see fold).
	before := v.Time
	v.Head = e.Hash
	if e.Time.After(v.Time) {
		v.Time = e.Time
	}
	if err := p.setVersion(b, r.Subject, v); err != nil {
		return e, err
	}
	return e, p.fold(b, e, before, r.Seq)
}

// version is the subject's version as the batch b has it.
func (p *Projection) version(b *pebble.Batch, subject string) (eventstore.Version, error) {
	if p.fresh != nil {
		if v, ok := p.fresh.versions[subject]; ok {
			return v, nil
		}
	}
	return getVersion(p.rd(b), subject)
}

// setVersion writes the subject's version into b. During a rebuild it is
// held back until the batch commits (rebuild.go, freshReader.versions),
// so that a subject with several events in a batch (a signup and its
// logins, a user's burst) writes its version key once, not once per
// event: the state committed is the same, with fewer keys to insert,
// flush and compact.
func (p *Projection) setVersion(b *pebble.Batch, subject string, v eventstore.Version) error {
	if p.fresh != nil {
		p.fresh.versions[subject] = v
		return nil
	}
	return b.Set(versionKey(subject), encodeVersion(v), nil)
}

// applyUse is apply for a message on a user's use subject: a standalone
// session_used (domain.JudgeUse) or a rejection. A use subject has no chain,
// so nothing records a version or head for it, and the user's subject keeps
// its own: appends there expect its sequence, which a use must not move.
// The use folds exactly as one on the user's subject would, against the
// user subject's time (see fold); folding the same use again changes
// nothing, whatever came in between, since a use only moves a deadline to
// its own time if that is later.
func (p *Projection) applyUse(b *pebble.Batch, keys *keyChainTx, r eventstore.Record, c *checked, userID string) (domain.Event, error) {
	e := c.e
	if c.decErr != nil {
		return e, reject(RejectDecode, c.decErr)
	}
	verifier := precheckedVerifier{keys: p.keys, c: c}
	switch reason, err := domain.JudgeUse(e, c.hashErr, userID, func(e domain.Event) error { return keys.forEvent(e).Authenticate(e, verifier) }); {
	case reason != "":
		return e, reject(reason, err)
	case err != nil:
		return e, err // the key in force is not held here: wait, do not judge
	}
	// A use that moves the session's last use finds it live at its own
	// time. If the session had been pruned from the hot index, a decision
	// found it dead at a later time: the use is late. Otherwise its index
	// key is still there. So such a use may put the key back without reading
	// the user's version to tell the two apart: the write is a no-op in the
	// second case, and that read is a Pebble miss for nearly every use.
	return e, p.fold(b, e, useAlwaysLate, r.Seq)
}

// useAlwaysLate is the "before" applyUse folds a use with: later than any
// event's time, so that a use that moves a session's last use always
// (re)writes its hot index key (see applyUse).
var useAlwaysLate = time.Unix(1<<62, 0)

// fold applies an authentic event's effect on the read model. before is
// the time of the subject before the event.
//
// A user's hot index holds the sessions every write of the user loads. A
// decision (session_started, session_logged_out, session_terminated,
// session_evicted, other_sessions_revoked) prunes it at its own time: the
// sessions dead then leave it. A session dead at an instant stays dead at
// every later one, and every later decision is decided at a later instant
// (the subject's time is monotonic), so it would change nothing about them:
// pruning never changes a verdict. The one way back to life is a use whose
// time is before the subject's (a late fact): folding it puts the session
// back into the hot index.
func (p *Projection) fold(b *pebble.Batch, e domain.Event, before time.Time, seq uint64) error {
	switch e.Type {
	case domain.EventEmailClaimed:
		c, err := domain.DecodePayload[domain.EmailClaimed](e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		if _, closer, err := p.rd(b).Get(claimKey(c.EmailHash)); err == nil {
			closer.Close()
			return nil // the first claim holds; later ones lost the race
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return err
		}
		return b.Set(claimKey(c.EmailHash), []byte(e.UserID), nil)
	case domain.EventUserRegistered:
		return applyUserRegistered(b, p.rd(b), e)
	case domain.EventSessionStarted:
		s, err := p.sessionStarted(e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		switch _, err := getSession(p.rd(b), e.SessionID); {
		case err == nil:
			return nil // already applied under another message id
		case !errors.Is(err, domain.ErrSessionNotFound):
			return err
		}
		if err := p.putSession(b, s); err != nil {
			return err
		}
		if err := foldFailures(b, p.rd(b), e); err != nil {
			return err
		}
		if err := b.Set(indexKey(prefixAllIndex, e.UserID, s.StartedAt(), s.ID()), nil, nil); err != nil {
			return err
		}
		if err := b.Set(indexKey(prefixUserIndex, e.UserID, s.StartedAt(), s.ID()), nil, nil); err != nil {
			return err
		}
		return p.prune(b, e.UserID, e.Time)
	case domain.EventSessionUsed, domain.EventSessionLoggedOut, domain.EventSessionTerminated, domain.EventSessionEvicted,
		domain.EventSessionRevokedByAdmin:
		s, err := p.batchSession(b, e.SessionID)
		if errors.Is(err, domain.ErrSessionNotFound) {
			return reject(RejectInvalid, fmt.Errorf("event %s: %w: %s", e.ID, err, e.SessionID))
		}
		if err != nil {
			return err
		}
		if s.UserID() != e.UserID {
			return reject(RejectInvalid, fmt.Errorf("event %s: session %s belongs to another user", e.ID, e.SessionID))
		}
		lastUse := s.LastUseAt()
		if err := p.applyToSession(b, s, e, seq); err != nil {
			return err
		}
		if e.Type != domain.EventSessionUsed {
			return p.prune(b, e.UserID, e.Time)
		}
		if !s.LastUseAt().Equal(lastUse) && e.Time.Before(before) {
			// A late use revived a session a decision after it may
			// have pruned: it is hot again.
			return b.Set(indexKey(prefixUserIndex, e.UserID, s.StartedAt(), s.ID()), nil, nil)
		}
		return nil
	case domain.EventOtherSessionsRevoked:
		return p.applyToUser(b, e, seq)
	case domain.EventUserErased:
		return p.foldErasure(b, e, seq)
	case domain.EventAPIKeyCreated, domain.EventAPIKeyRevoked, domain.EventAPIKeyUsed:
		return foldAPIKey(b, e) // apikeys.go
	case domain.EventMFAEnrolmentStarted, domain.EventMFAEnrolled, domain.EventMFADisabled, domain.EventMFAChallenged,
		domain.EventMFAVerified, domain.EventRecoveryCodeUsed, domain.EventMFAFailed:
		return foldMFA(b, e) // mfa.go
	case domain.EventLoginFailed, domain.EventLoginThrottled:
		if e.UserID == "" {
			return nil // an unknown email: for the audit trail only
		}
		if err := foldFailures(b, p.rd(b), e); err != nil {
			return err
		}
		return foldChallenges(b, e) // a wrong code is a try (lifecycle.go)
	case domain.EventPasswordChanged, domain.EventPasswordReset:
		return p.foldPassword(b, e, seq) // lifecycle.go
	case domain.EventPasswordResetRequested, domain.EventLoginCodeRequested, domain.EventLoginCodeUsed:
		return foldChallenges(b, e)
	case domain.EventUserRoleChanged:
		return p.foldRole(b, e)
	case domain.EventServiceKeyCreated, domain.EventAppRegistered, domain.EventServiceKeyRevoked, domain.EventAppRevoked:
		return foldCredential(b, e)
	default: // tallies: for the audit trail; key events: folded by the chain
		return nil
	}
}

// foldFailures keeps an account's recent failed logins, which the login
// throttle decides from; a session start clears them.
func foldFailures(b *pebble.Batch, r reader, e domain.Event) error {
	f, err := getFailures(r, e.UserID)
	if err != nil {
		return err
	}
	if f.IsZero() && e.Type == domain.EventSessionStarted {
		return nil // nothing to clear: no write on the usual login
	}
	if f, err = f.Apply(e); err != nil {
		return reject(RejectInvalid, err)
	}
	if f.IsZero() {
		return b.Delete(failuresKey(e.UserID), nil)
	}
	return b.Set(failuresKey(e.UserID), mustJSON(f), nil)
}

func getFailures(r reader, userID string) (domain.LoginFailures, error) {
	var f domain.LoginFailures
	err := getJSON(r, failuresKey(userID), &f)
	if errors.Is(err, pebble.ErrNotFound) {
		return domain.LoginFailures{}, nil
	}
	if err != nil {
		return f, fmt.Errorf("failed logins of %s: %w", userID, err)
	}
	return f, nil
}

func applyUserRegistered(b *pebble.Batch, r reader, e domain.Event) error {
	p, err := domain.DecodePayload[domain.UserRegistered](e)
	if err != nil {
		return reject(RejectInvalid, err)
	}
	emailHash := p.Hash()
	if emailHash == "" {
		return reject(RejectInvalid, fmt.Errorf("event %s: no email", e.ID))
	}
	if _, closer, err := r.Get(emailKey(emailHash)); err == nil {
		closer.Close()
		// The claim protocol lets only one registration per email reach
		// the log; should another ever appear, the first one keeps it.
		return reject(RejectInvalid, fmt.Errorf("event %s: email already belongs to another user", e.ID))
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	if err := b.Set(userKey(e.UserID), mustJSON(userRecord{EmailHash: emailHash, PasswordHash: p.PasswordHash, RegisteredAt: e.Time}), nil); err != nil {
		return err
	}
	return b.Set(emailKey(emailHash), mustJSON(emailRecord{UserID: e.UserID, PasswordHash: p.PasswordHash}), nil)
}

// foldErasure applies user_erased: every live session of the user is
// revoked (Session.Apply), and the email is freed: its index entry and its
// claim go, so the email can sign up again (as a new user, whose claim the
// signup appends at the email subject's version). The user record stays,
// marked erased and without its password hash, so that erasing again is
// a no-op decision.
func (p *Projection) foldErasure(b *pebble.Batch, e domain.Event, seq uint64) error {
	var rec userRecord
	switch err := getJSON(b, userKey(e.UserID), &rec); {
	case errors.Is(err, pebble.ErrNotFound):
		return reject(RejectInvalid, fmt.Errorf("event %s: erasure of a user who never registered", e.ID))
	case err != nil:
		return err
	}
	if err := p.applyToUser(b, e, seq); err != nil {
		return err
	}
	if rec.Erased {
		return nil
	}
	var owner emailRecord
	switch err := getJSON(b, emailKey(rec.EmailHash), &owner); {
	case err == nil && owner.UserID == e.UserID:
		if err := b.Delete(emailKey(rec.EmailHash), nil); err != nil {
			return err
		}
	case err != nil && !errors.Is(err, pebble.ErrNotFound):
		return err
	}
	switch v, closer, err := b.Get(claimKey(rec.EmailHash)); {
	case err == nil:
		mine := string(v) == e.UserID
		closer.Close()
		if mine {
			if err := b.Delete(claimKey(rec.EmailHash), nil); err != nil {
				return err
			}
		}
	case !errors.Is(err, pebble.ErrNotFound):
		return err
	}
	rec.Erased, rec.PasswordHash = true, ""
	return b.Set(userKey(e.UserID), mustJSON(rec), nil)
}

// applyToUser folds an event about all of a user's sessions (a
// revocation of every other one, or of all) into each hot session, then
// prunes the ones it killed from the hot index.
func (p *Projection) applyToUser(b *pebble.Batch, e domain.Event, seq uint64) error {
	sessions, err := p.hotSessions(b, e.UserID)
	if err != nil {
		return err
	}
	for _, s := range sessions {
		if err := p.applyToSession(b, s, e, seq); err != nil {
			return err
		}
	}
	return p.prune(b, e.UserID, e.Time)
}

// applyToSession folds e into s and stores it; if e revoked it, the
// revocation feed gets an entry at seq.
func (p *Projection) applyToSession(b *pebble.Batch, s *domain.Session, e domain.Event, seq uint64) error {
	wasRevoked := !s.Snapshot().RevokedAt.IsZero()
	if err := s.Apply(e); err != nil {
		return reject(RejectInvalid, err)
	}
	if after := s.Snapshot(); !wasRevoked && !after.RevokedAt.IsZero() {
		r := ports.Revocation{Seq: seq, SessionID: s.ID(), UserID: s.UserID(), Reason: string(after.RevokedBy), At: after.RevokedAt}
		if err := b.Set(revocationKey(seq, s.ID()), mustJSON(r), nil); err != nil {
			return err
		}
	}
	return p.putSession(b, s)
}

func (p *Projection) putSession(b *pebble.Batch, s *domain.Session) error {
	snap := s.Snapshot()
	p.written = append(p.written, snap)
	return b.Set(sessionKey(snap.ID), encodeSession(snap), nil)
}

// batchSession reads a session for the fold as the batch b sees it. A
// session the batch has not written yet is as last committed, which the
// session cache holds exactly when it holds it (cache.go): applying a use
// of a session validate has just read then costs no Pebble read, which was
// about a sixth of a use's apply at 1M sessions. Only a batch that has
// written a few sessions looks through them; a larger one (catch-up) and
// a rebuild read Pebble as before.
func (p *Projection) batchSession(b *pebble.Batch, id string) (*domain.Session, error) {
	if p.fresh == nil && len(p.written) <= 8 {
		mine := false
		for i := range p.written {
			if p.written[i].ID == id {
				mine = true
				break
			}
		}
		if !mine {
			if snap, ok := p.cache.get(id); ok {
				return domain.SessionFromSnapshot(snap), nil
			}
		}
	}
	return getSession(p.rd(b), id)
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

// prune takes the user's sessions that are not live at `at` out of the hot
// index (see fold).
func (p *Projection) prune(b *pebble.Batch, userID string, at time.Time) error {
	prefix := indexPrefix(prefixUserIndex, userID)
	keys, err := p.hotKeys(b, userID)
	if err != nil {
		return err
	}
	var dead []string
	for _, k := range keys {
		s, err := getSession(p.rd(b), sessionOfIndexKey(prefix, []byte(k)))
		if err != nil {
			return err
		}
		if !s.Live(at) {
			dead = append(dead, k)
		}
	}
	for _, k := range dead {
		if err := b.Delete([]byte(k), nil); err != nil {
			return err
		}
	}
	return nil
}

// hotKeys are the keys of the user's hot index in b, in order: during a
// rebuild, often from its cache (rebuildcache.go).
func (p *Projection) hotKeys(b *pebble.Batch, userID string) ([]string, error) {
	if p.fresh != nil {
		return p.fresh.hotKeys(userID)
	}
	return iterKeys(b, indexPrefix(prefixUserIndex, userID))
}

// hotSessions are the user's hot sessions in b: every one that may be live.
func (p *Projection) hotSessions(b *pebble.Batch, userID string) ([]*domain.Session, error) {
	keys, err := p.hotKeys(b, userID)
	if err != nil {
		return nil, err
	}
	return sessionsOf(p.rd(b), indexPrefix(prefixUserIndex, userID), keys)
}

// userSessions are the user's hot sessions: every one that may be live.
func userSessions(r reader, userID string) ([]*domain.Session, error) {
	prefix := indexPrefix(prefixUserIndex, userID)
	keys, err := iterKeys(r, prefix)
	if err != nil {
		return nil, err
	}
	return sessionsOf(r, prefix, keys)
}

func sessionsOf(r reader, prefix []byte, keys []string) ([]*domain.Session, error) {
	out := make([]*domain.Session, 0, len(keys))
	for _, k := range keys {
		s, err := getSession(r, sessionOfIndexKey(prefix, []byte(k)))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// iterKeys are the keys under prefix, in order.
func iterKeys(r reader, prefix []byte) ([]string, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	var keys []string
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, string(it.Key()))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return keys, nil
}

func getJSON(r reader, key []byte, v any) error {
	raw, closer, err := r.Get(key)
	if err != nil {
		return err
	}
	defer closer.Close()
	return json.Unmarshal(raw, v)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
