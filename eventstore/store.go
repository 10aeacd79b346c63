package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// Errors, as the application knows them (see handlers/ports).
var (
	// ErrConflict: the subject moved on since the caller read it.
	ErrConflict = ports.ErrConflict
	// ErrRejected: appended, but the instance's projection did not accept
	// it (see projections.Rejected): an honest writer meets it only when a
	// key rotation landed just before its event.
	ErrRejected = ports.ErrRejected
	// The stream is not in a state the ledger can write to. None of these
	// is repaired by the ledger: an operator has to look (see /readyz).
	ErrStreamMissing = ports.ErrStreamMissing
	ErrStreamSealed  = ports.ErrStreamSealed
	ErrStreamFull    = ports.ErrStreamFull
)

// JetStream error codes.
const (
	codeWrongLastSequence         jetstream.ErrorCode = 10071
	codeWrongLastSequenceConstant jetstream.ErrorCode = 10164
	codeStreamSealed              jetstream.ErrorCode = 10109
	codeStreamStoreFailed         jetstream.ErrorCode = 10077 // "maximum messages exceeded" and friends
	codeStreamNotFound            jetstream.ErrorCode = 10059
	codeStreamMismatch            jetstream.ErrorCode = 10060
)

// Config is the stream the ledger lives in.
type Config struct {
	Stream   string // default DefaultStream
	Replicas int    // 1 for the embedded server, 3 on a cluster
	// Create lets Open create the stream if it is missing. The caller
	// allows it only for a ledger that has never applied an event: creating
	// an empty stream under a projection that has applied some would hide
	// that the ledger's history is gone.
	Create bool
	// Keys gives the key to sign with: the key in force, as this instance's
	// projection knows it. Required to append.
	Keys KeySource
	// Versions gives a subject's trusted version. Required to append facts
	// without a version, and after conflicts.
	Versions VersionSource
	// NewID gives events their ids (also their Nats-Msg-Id); default
	// NewEventID.
	NewID func() string
}

// NewEventID is a UUIDv7: unique, and ordered by time, which keeps ids of
// one history close together in indexes.
func NewEventID() string { return uuid.Must(uuid.NewV7()).String() }

// KeySource gives the signing key in force. It fails with
// domain.ErrKeyUnavailable if this instance does not hold it.
type KeySource interface {
	SigningKey() (domain.SigningKey, error)
}

// VersionSource gives the version of a subject that the next event must
// link to, once everything up to seq on the stream has been checked: the
// last sequence of the subject (whatever message it holds, so that the
// expected-sequence check passes) and the hash of the subject's last
// authentic event. Only a verifier of events can say which event that is,
// so the store never takes a head from the stream itself: a forged message
// at the end of a subject must not become what a signed event vouches for.
type VersionSource interface {
	SubjectVersion(ctx context.Context, subject string, seq uint64) (Version, error)
}

// StreamConfig is the append-only stream: deletes and purges are refused by
// the server itself, not just by convention.
func StreamConfig(cfg Config) jetstream.StreamConfig {
	name := cfg.Stream
	if name == "" {
		name = DefaultStream
	}
	replicas := cfg.Replicas
	if replicas < 1 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:        name,
		Description: "session ledger: append-only log of logins, uses, logouts and revocations",
		Subjects:    []string{SubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Replicas:    replicas,
		DenyDelete:  true,
		DenyPurge:   true,
		// No direct gets: any replica may answer one, possibly a follower
		// that is behind, and a subject's head read for an optimistic
		// append must come from the leader.
		AllowDirect: false,
		Duplicates:  2 * time.Minute,
	}
}

// Reader reads a ledger stream: the ledger's own, or a read-only mirror of
// it. It cannot append; only a Store can.
type Reader struct {
	js       jetstream.JetStream
	stream   jetstream.Stream
	name     string
	verifier domain.Verifier // for reads that judge events (nil: signatures)
}

// NewReader reads any stream: a copy of the ledger under test, say.
func NewReader(stream jetstream.Stream) *Reader {
	r := &Reader{stream: stream}
	if info := stream.CachedInfo(); info != nil {
		r.name = info.Config.Name
	}
	return r
}

// Store appends to the ledger stream (and reads it, as a Reader).
type Store struct {
	*Reader
	created  bool
	appends  *prometheus.CounterVec
	appendAt prometheus.Histogram // latency of acknowledged appends at a version
	keys     KeySource
	versions VersionSource
	newID    func() string
}

// Open opens the stream, creating it if it is missing and cfg.Create
// allows it, and checks that it is append-only.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sc := StreamConfig(cfg)
	created := false
	stream, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if !cfg.Create {
			return nil, fmt.Errorf("stream %s: %w", sc.Name, ErrStreamMissing)
		}
		stream, err = js.CreateStream(ctx, sc)
		created = err == nil
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", sc.Name, err)
	}
	info := stream.CachedInfo().Config
	if !info.DenyDelete || !info.DenyPurge {
		return nil, fmt.Errorf("stream %s allows deletes or purges; the ledger must be append-only", sc.Name)
	}
	newID := cfg.NewID
	if newID == nil {
		newID = NewEventID
	}
	return &Store{Reader: &Reader{js: js, stream: stream, name: sc.Name}, created: created, appends: newAppendCounter(), appendAt: newAppendLatency(),
		keys: cfg.Keys, versions: cfg.Versions, newID: newID}, nil
}

// Created reports whether Open created the stream.
func (s *Store) Created() bool { return s.created }

// SetTrust gives the store its key and version sources once the projection
// that provides them is open.
func (s *Store) SetTrust(keys KeySource, versions VersionSource) {
	s.keys, s.versions = keys, versions
}

// SetVerifier sets how reads judge events: a keyring (MACs) on an instance,
// public keys (signatures, the default) for an auditor.
func (s *Reader) SetVerifier(v domain.Verifier) { s.verifier = v }

// Verifier is how reads judge events (nil: by signature).
func (s *Reader) Verifier() domain.Verifier { return s.verifier }

// JetStream exposes the client for subscribers built on it.
func (s *Reader) JetStream() jetstream.JetStream { return s.js }

// StreamName is the ledger stream's name.
func (s *Reader) StreamName() string { return s.name }

// Version is where a subject stands (see ports.Version).
type Version = ports.Version

// sealAt links e after v, signs it, and gives it a time no earlier than v's.
// It is the one place an event gets its hash and signature.
func (s *Store) sealAt(e *domain.Event, v Version, key domain.SigningKey) ([]byte, error) {
	if e.ID == "" {
		e.ID = s.newID()
	}
	e.Time = domain.NextEventTime(e.Time, v.Time)
	return e.SealEncoded(v.Head, key)
}

func (s *Store) signingKey() (domain.SigningKey, error) {
	if s.keys == nil {
		return domain.SigningKey{}, errors.New("eventstore: no signing key source; the store cannot append")
	}
	return s.keys.SigningKey()
}

// AppendUser appends decided events to a user's history (see Append).
func (s *Store) AppendUser(ctx context.Context, userID string, v Version, events ...domain.Event) (Version, error) {
	return s.Append(ctx, UserSubject(userID), v, events...)
}

// AppendEmailClaim appends a claim to an email's history (see Append).
func (s *Store) AppendEmailClaim(ctx context.Context, emailHash string, v Version, e domain.Event) (Version, error) {
	return s.Append(ctx, EmailSubject(emailHash), v, e)
}

// UserVersion is a user's history's trusted version now (see Head).
func (s *Store) UserVersion(ctx context.Context, userID string) (Version, error) {
	return s.Head(ctx, UserSubject(userID))
}

// EmailVersion is an email's history's trusted version now (see Head).
func (s *Store) EmailVersion(ctx context.Context, emailHash string) (Version, error) {
	return s.Head(ctx, EmailSubject(emailHash))
}

// RecordFacts appends facts, each to its user's subject, or for no known
// user to AnonSubject (see AppendFacts). Uses go through RecordUses.
func (s *Store) RecordFacts(ctx context.Context, facts []ports.Fact) (int, error) {
	pubs := make([]Publication, len(facts))
	for i, f := range facts {
		subject := AnonSubject
		if f.Event.UserID != "" {
			subject = UserSubject(f.Event.UserID)
		}
		pubs[i] = Publication{Subject: subject, Event: f.Event, MsgID: f.DedupKey, At: f.At}
	}
	return s.AppendFacts(ctx, pubs)
}

// RecordUses appends session_used events, each to its user's use subject
// (UseSubject), sealed with no predecessor and published without the
// expected-last-subject-sequence header: the server then never loads the
// user's history to check it, and uses from any number of instances go in
// side by side (see domain.JudgeUse for why a use needs no chain). The
// Nats-Msg-Id (DedupKey, else the event id) still makes instances recording
// the same use write it once. Facts that are not uses of a known user's
// session are refused, not sent elsewhere. It returns how many were stored.
func (s *Store) RecordUses(ctx context.Context, facts []ports.Fact) (stored int, err error) {
	key, err := s.signingKey()
	if err != nil {
		return 0, err
	}
	// Every use is sealed and published without waiting for its ack, then
	// the acks are collected: the asynchronous publish costs the process
	// less than a request and a goroutine per use (a use is recorded
	// while validations wait for the same cores). A use whose asynchronous
	// publish failed goes again the ordinary way, with publishWith's
	// retries.
	type inFlight struct {
		subject, msgID, eventID string
		data                    []byte
		ack                     jetstream.PubAckFuture
	}
	sent := make([]inFlight, 0, len(facts))
	for _, f := range facts {
		e := f.Event
		if e.Type != domain.EventSessionUsed || e.UserID == "" || e.SessionID == "" {
			err = errors.Join(err, fmt.Errorf("record uses: %s of user %q, session %q is not a use", e.Type, e.UserID, e.SessionID))
			continue
		}
		u := inFlight{subject: UseSubject(e.UserID), msgID: f.DedupKey}
		data, serr := s.sealAt(&e, Version{}, key)
		if serr != nil {
			err = errors.Join(err, serr)
			continue
		}
		u.data, u.eventID = data, e.ID
		if u.msgID == "" {
			u.msgID = e.ID
		}
		// An error here (too many acks pending, a closed connection) is
		// met below by the ordinary publish.
		u.ack, _ = s.js.PublishAsync(u.subject, u.data, jetstream.WithMsgID(u.msgID), jetstream.WithExpectStream(s.name))
		sent = append(sent, u)
	}
	for _, u := range sent {
		if u.ack != nil {
			select {
			case ack := <-u.ack.Ok():
				if ack.Duplicate {
					s.appends.WithLabelValues("duplicate").Inc()
				} else {
					s.appends.WithLabelValues("ok").Inc()
				}
				stored++
				continue
			case <-u.ack.Err():
			case <-ctx.Done():
				err = errors.Join(err, fmt.Errorf("append %s to %s: %w", domain.EventSessionUsed, u.subject, ctx.Err()))
				continue
			}
		}
		if _, _, perr := s.publishWith(ctx, u.subject, u.data, u.msgID, u.eventID, nil); perr != nil {
			err = errors.Join(err, fmt.Errorf("append %s to %s: %w", domain.EventSessionUsed, u.subject, perr))
			continue
		}
		stored++
	}
	return stored, err
}

// Append writes events to one subject in order, each given an id (if it
// has none), sealed into the subject's hash chain and signed, and returns
// the subject's new version.
// The first event must find the subject at v and each following one finds
// its predecessor, so a conflicting writer makes the append fail with
// ErrConflict. Each event's ID is its Nats-Msg-Id, so a publish retried
// after a lost ack is not written twice.
func (s *Store) Append(ctx context.Context, subject string, v Version, events ...domain.Event) (Version, error) {
	key, err := s.signingKey()
	if err != nil {
		return Version{}, err
	}
	return s.appendWith(ctx, key, subject, v, events...)
}

func (s *Store) appendWith(ctx context.Context, key domain.SigningKey, subject string, v Version, events ...domain.Event) (Version, error) {
	for _, e := range events {
		data, err := s.sealAt(&e, v, key)
		if err != nil {
			return Version{}, err
		}
		seq, _, err := s.publish(ctx, subject, data, e.ID, e.ID, v.Seq)
		if err != nil {
			return Version{}, fmt.Errorf("append %s to %s: %w", e.Type, subject, err)
		}
		v = Version{Seq: seq, Head: e.Hash, Time: e.Time}
	}
	return v, nil
}

// Introduce appends the first event of a new ledger, which puts key in
// force. It succeeds only on an empty key subject; a concurrent first start
// loses with ErrConflict.
func (s *Store) Introduce(ctx context.Context, key domain.SigningKey, id string, at time.Time) (Version, error) {
	e := domain.IntroduceKey(key, at)
	e.ID = id
	return s.appendWith(ctx, key, KeysSubject, Version{}, e)
}

// Rotate retires the key in force for next, in an event signed by the key
// in force, which ring must hold. It reads the key history from the stream
// itself (checked with ring), so it needs no projection.
func (s *Store) Rotate(ctx context.Context, ring *domain.Keyring, next domain.SigningKey, id string, at time.Time) (Version, error) {
	chain, v, err := s.KeyHistory(ctx, ring)
	if err != nil {
		return Version{}, err
	}
	current, ok := ring.Key(chain.Active)
	switch {
	case chain.Active == "":
		return Version{}, errors.New("rotate: the log has no signing key in force yet")
	case !ok:
		return Version{}, fmt.Errorf("rotate: key %s is in force, but not in the given key ring", chain.Active)
	case chain.Keys[next.ID()].Key != nil:
		return Version{}, fmt.Errorf("rotate: key %s (the ring's newest) was already in force; add a new key to the ring (ledger keys generate)", next.ID())
	}
	e := domain.RotateKey(current.ID(), next, at)
	e.ID = id
	return s.appendWith(ctx, current, KeysSubject, v, e)
}

// KeyHistory folds the stream's key subject: the key chain, and the
// subject's trusted version. Messages that fail the checks are passed over,
// as the projection does.
func (s *Reader) KeyHistory(ctx context.Context, v domain.Verifier) (*domain.KeyChain, Version, error) {
	chain, _, ver, err := keyTimeline(ctx, s.stream, v)
	return chain, ver, err
}

// keyInForce is a key and the first stream sequence it signs.
type keyInForce struct {
	from uint64
	key  domain.PublicKey
}

// keyTimeline folds the key subject and says from which sequence on each
// key was in force.
func keyTimeline(ctx context.Context, stream jetstream.Stream, v domain.Verifier) (*domain.KeyChain, []keyInForce, Version, error) {
	chain := &domain.KeyChain{}
	var ver Version
	var timeline []keyInForce
	err := readStream(ctx, stream, ReadOptions{Subject: KeysSubject}, func(r Record) error {
		ver.Seq = r.Seq
		e, err := domain.DecodeEvent(r.Data)
		if err != nil {
			return nil
		}
		switch reason, err := domain.Judge(e, ver.Head, func(e domain.Event) error { return chain.Authenticate(e, v) }); {
		case reason != "":
		case err != nil:
			return err // the key in force is not held here
		default:
			ver.Head, ver.Time = e.Hash, e.Time
			timeline = append(timeline, keyInForce{from: r.Seq + 1, key: chain.Keys[chain.Active]})
		}
		return nil
	})
	return chain, timeline, ver, err
}

// ErrNotAuthentic marks a stored message that a projection would reject.
var ErrNotAuthentic = errors.New("not authentic")

// CheckedHistory reads one subject's messages in order and judges each as a
// projection does: a message that does not decode, match its hash, link to
// the subject's last authentic event, or carry the signature (or MAC, with
// a keyring) of the key in force at its sequence has Err set, wrapping
// ErrNotAuthentic with the reason. Audit replays fold only the others, so
// a forged event can no more sway an explanation than a live verdict.
func (s *Reader) CheckedHistory(ctx context.Context, subject string) ([]StoredEvent, error) {
	stream, v := s.stream, s.verifier
	if v == nil {
		v = domain.SignatureVerifier{}
	}
	if subject == KeysSubject {
		chain := &domain.KeyChain{}
		return checked(ctx, stream, subject, func(e domain.Event, _ uint64) error { return chain.Authenticate(e, v) })
	}
	authenticate, err := s.authenticator(ctx)
	if err != nil {
		return nil, err
	}
	if userID, ok := UseSubjectUser(subject); ok {
		return checkedUses(ctx, stream, userID, authenticate)
	}
	return checked(ctx, stream, subject, authenticate)
}

// authenticator checks an event against the key in force at its sequence,
// from the key subject as it stands now.
func (s *Reader) authenticator(ctx context.Context) (func(domain.Event, uint64) error, error) {
	v := s.verifier
	if v == nil {
		v = domain.SignatureVerifier{}
	}
	_, timeline, _, err := keyTimeline(ctx, s.stream, v)
	if err != nil {
		return nil, err
	}
	return func(e domain.Event, seq uint64) error {
		var key *domain.PublicKey
		for i := range timeline {
			if timeline[i].from <= seq {
				key = &timeline[i].key
			}
		}
		switch {
		case key == nil:
			return fmt.Errorf("%w: no signing key was in force yet", domain.ErrNotAuthentic)
		case e.KeyID != key.ID:
			return fmt.Errorf("%w: signed by key %s, but key %s was in force", domain.ErrNotAuthentic, e.KeyID, key.ID)
		}
		return v.Verify(e, *key)
	}, nil
}

// checkedUses judges a use subject's messages as a projection does
// (domain.JudgeUse): each on its own, there being no chain.
func checkedUses(ctx context.Context, stream jetstream.Stream, userID string, authenticate func(domain.Event, uint64) error) ([]StoredEvent, error) {
	var out []StoredEvent
	err := readStream(ctx, stream, ReadOptions{Subject: UseSubject(userID)}, func(r Record) error {
		se := Decode(r)
		if se.Err != nil {
			se.Err = fmt.Errorf("%w (%s): %v", ErrNotAuthentic, domain.RejectDecode, se.Err)
		} else {
			reason, err := domain.JudgeUse(se.Event, se.Event.CheckHash(), userID, func(e domain.Event) error { return authenticate(e, r.Seq) })
			switch {
			case reason != "":
				se.Err = fmt.Errorf("%w (%s): %v", ErrNotAuthentic, reason, err)
			case err != nil:
				return err
			}
		}
		out = append(out, se)
		return nil
	})
	return out, err
}

func checked(ctx context.Context, stream jetstream.Stream, subject string, authenticate func(domain.Event, uint64) error) ([]StoredEvent, error) {
	var out []StoredEvent
	head := ""
	err := readStream(ctx, stream, ReadOptions{Subject: subject}, func(r Record) error {
		se := Decode(r)
		if se.Err != nil {
			se.Err = fmt.Errorf("%w (%s): %v", ErrNotAuthentic, domain.RejectDecode, se.Err)
		} else {
			reason, err := domain.Judge(se.Event, head, func(e domain.Event) error { return authenticate(e, r.Seq) })
			switch {
			case reason != "":
				se.Err = fmt.Errorf("%w (%s): %v", ErrNotAuthentic, reason, err)
			case err != nil:
				return err
			default:
				head = se.Event.Hash
			}
		}
		out = append(out, se)
		return nil
	})
	return out, err
}

// publish retries transient failures (a lost ack, a leader election) with
// the same message id. A single server checks the expected subject sequence
// before the message id, so a retry of a write that did land comes back as a
// conflict; publish then looks for its own event right after the expected
// version and, if it is there, returns its sequence.
func (s *Store) publish(ctx context.Context, subject string, data []byte, msgID, eventID string, expected uint64) (seq uint64, duplicate bool, err error) {
	return s.publishWith(ctx, subject, data, msgID, eventID, &expected)
}

// publishWith is publish; a nil expected publishes without the
// expected-last-subject-sequence header (a standalone use).
func (s *Store) publishWith(ctx context.Context, subject string, data []byte, msgID, eventID string, expectedSeq *uint64) (seq uint64, duplicate bool, err error) {
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(msgID), jetstream.WithExpectStream(s.name)}
	var expected uint64
	if expectedSeq != nil {
		expected = *expectedSeq
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(expected))
	}
	start := time.Now()
	// Retries stop after ~5 s in all, so a write with NATS down fails while
	// its HTTP request can still be answered.
	ctx, cancelAll := context.WithTimeout(ctx, 5*time.Second)
	defer cancelAll()
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := s.js.Publish(actx, subject, data, opts...)
		cancel()
		if err == nil {
			if ack.Duplicate {
				s.appends.WithLabelValues("duplicate").Inc()
			} else {
				s.appends.WithLabelValues("ok").Inc()
			}
			if expectedSeq != nil {
				s.appendAt.Observe(time.Since(start).Seconds())
			}
			return ack.Sequence, ack.Duplicate, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			switch apiErr.ErrorCode {
			case codeWrongLastSequence, codeWrongLastSequenceConstant:
				if attempt > 1 {
					if seq, ok := s.landed(ctx, subject, expected, eventID); ok {
						s.appends.WithLabelValues("duplicate").Inc()
						return seq, false, nil
					}
				}
				s.appends.WithLabelValues("conflict").Inc()
				return 0, false, ErrConflict
			}
			s.appends.WithLabelValues("error").Inc()
			return 0, false, streamStateError(apiErr)
		}
		// A stream that does not exist has nobody to answer on its subjects.
		if errors.Is(err, jetstream.ErrNoStreamResponse) && attempt >= 3 {
			s.appends.WithLabelValues("error").Inc()
			return 0, false, fmt.Errorf("%w (no stream answers on %s)", ErrStreamMissing, subject)
		}
		if attempt >= 6 || ctx.Err() != nil {
			s.appends.WithLabelValues("error").Inc()
			return 0, false, err
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// streamStateError names a refusal that comes from the stream's state.
func streamStateError(apiErr *jetstream.APIError) error {
	switch apiErr.ErrorCode {
	case codeStreamSealed:
		return fmt.Errorf("%w: %v", ErrStreamSealed, apiErr)
	case codeStreamStoreFailed:
		return fmt.Errorf("%w: %v", ErrStreamFull, apiErr)
	case codeStreamNotFound, codeStreamMismatch:
		return fmt.Errorf("%w: %v", ErrStreamMissing, apiErr)
	}
	return apiErr
}

// landed reports whether the subject's first message after `after` is the
// event with id eventID.
func (s *Store) landed(ctx context.Context, subject string, after uint64, eventID string) (uint64, bool) {
	m, err := s.stream.GetMsg(ctx, after+1, jetstream.WithGetMsgSubject(subject))
	if err != nil {
		return 0, false
	}
	e, err := domain.DecodeEvent(m.Data)
	if err != nil || e.ID != eventID {
		return 0, false
	}
	return m.Sequence, true
}

// Publication is one fact of a batch.
type Publication struct {
	Subject string
	Event   domain.Event
	// MsgID de-duplicates across instances; defaults to the event id.
	MsgID string
	// At, if known, is the subject's trusted version as a projection last
	// saw it. It spares a read of the subject's last message from the
	// stream, which makes the server load that message's whole block into
	// memory.
	At *Version
}

// AppendFacts appends events that decide nothing (a use, a failed login),
// each at whatever version its subject has: the store links it to the
// subject's trusted head (given, or from the version source) and retries on
// a conflict. Facts on one subject go in order, one after the other (each
// links to the one before); different subjects proceed in parallel. It
// returns how many were stored.
func (s *Store) AppendFacts(ctx context.Context, pubs []Publication) (stored int, err error) {
	key, err := s.signingKey()
	if err != nil {
		return 0, err
	}
	bySubject := map[string][]Publication{}
	var order []string
	for _, p := range pubs {
		if _, ok := bySubject[p.Subject]; !ok {
			order = append(order, p.Subject)
		}
		bySubject[p.Subject] = append(bySubject[p.Subject], p)
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sema = make(chan struct{}, 32)
	)
	for _, subject := range order {
		wg.Add(1)
		sema <- struct{}{}
		go func(group []Publication) {
			defer func() { <-sema; wg.Done() }()
			var last *Version // what this group just wrote: trusted, newer than any hint
			for _, p := range group {
				if last != nil {
					p.At = last
				}
				v, e := s.appendFact(ctx, key, p)
				last = v
				mu.Lock()
				if e != nil {
					err = errors.Join(err, e)
				} else {
					stored++
				}
				mu.Unlock()
			}
		}(bySubject[subject])
	}
	wg.Wait()
	return stored, err
}

// appendFact returns the subject's version after the fact if this process
// knows it (nil after a duplicate, whose stored copy it did not write).
func (s *Store) appendFact(ctx context.Context, key domain.SigningKey, p Publication) (*Version, error) {
	if p.Event.ID == "" {
		p.Event.ID = s.newID()
	}
	msgID := p.MsgID
	if msgID == "" {
		msgID = p.Event.ID
	}
	for attempt := 1; ; attempt++ {
		var v Version
		if p.At != nil {
			v = *p.At
		} else {
			var err error
			if v, err = s.Head(ctx, p.Subject); err != nil {
				return nil, err
			}
		}
		p.At = nil // a conflict means the hint is stale: ask again next time
		e := p.Event
		data, err := s.sealAt(&e, v, key)
		if err != nil {
			return nil, err
		}
		seq, dup, err := s.publish(ctx, p.Subject, data, msgID, e.ID, v.Seq)
		if err == nil {
			if dup {
				return nil, nil
			}
			return &Version{Seq: seq, Head: e.Hash, Time: e.Time}, nil
		}
		if !errors.Is(err, ErrConflict) || attempt == 20 {
			return nil, fmt.Errorf("append %s to %s: %w", e.Type, p.Subject, err)
		}
	}
}

// Head is a subject's trusted version: its last sequence on the stream,
// and the head and time of its last authentic event once the version source
// has checked everything up to that sequence.
func (s *Store) Head(ctx context.Context, subject string) (Version, error) {
	if s.versions == nil {
		return Version{}, errors.New("eventstore: no version source; the store cannot tell a subject's trusted head")
	}
	var seq uint64
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return Version{}, fmt.Errorf("last message on %s: %w", subject, err)
	default:
		seq = m.Sequence
	}
	return s.versions.SubjectVersion(ctx, subject, seq)
}

// LastSeq is the sequence of the newest message in the stream.
func (s *Reader) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Record is one stored message as read back from the stream.
type Record struct {
	Seq     uint64
	Subject string
	Data    []byte
	Stored  time.Time
}

// ReadFrom calls fn for every message from sequence `from` up to the end of
// the stream as it was when the read began, in order. It is the bulk path
// (catch-up, rebuild, audit).
func (s *Reader) ReadFrom(ctx context.Context, from uint64, fn func(Record) error) error {
	return readStream(ctx, s.stream, ReadOptions{From: from}, fn)
}

// ReadSubject calls fn for every message of one subject, in order.
func (s *Reader) ReadSubject(ctx context.Context, subject string, fn func(Record) error) error {
	return readStream(ctx, s.stream, ReadOptions{Subject: subject}, fn)
}

// Stream is the underlying JetStream stream.
func (s *Reader) Stream() jetstream.Stream { return s.stream }

// ReadOptions narrows a read.
type ReadOptions struct {
	From    uint64 // first sequence (default 1)
	Subject string // one exact subject; empty for the whole stream
}

// Read reads the stream through an ordered consumer with large pull
// batches, from the start position to the stream's end as it was when the
// read began.
func (s *Reader) Read(ctx context.Context, o ReadOptions, fn func(Record) error) error {
	return readStream(ctx, s.stream, o, fn)
}

func readStream(ctx context.Context, stream jetstream.Stream, o ReadOptions, fn func(Record) error) error {
	if o.From < 1 {
		o.From = 1
	}
	var last uint64
	if o.Subject != "" {
		m, err := stream.GetLastMsgForSubject(ctx, o.Subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("last message on %s: %w", o.Subject, err)
		}
		last = m.Sequence
	} else {
		info, err := stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream info: %w", err)
		}
		last = info.State.LastSeq
	}
	if last < o.From {
		return nil
	}
	// Ordered consumers outlive Stop for their inactive threshold (5 min by
	// default); audit reads make many, so they are short-lived and deleted.
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: o.From,
		InactiveThreshold: 30 * time.Second,
	}
	if o.Subject != "" {
		cfg.FilterSubjects = []string{o.Subject}
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	defer deleteConsumer(ctx, stream, cons)
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read stream: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read stream metadata: %w", err)
		}
		if err := fn(Record{Seq: md.Sequence.Stream, Subject: msg.Subject(), Data: msg.Data(), Stored: md.Timestamp}); err != nil {
			return err
		}
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return nil
		}
	}
}

// deleteConsumer removes a reader's consumer as the read ends, even when
// ctx was cancelled: left alone it would outlive the read for its
// inactive threshold, and audit reads make many.
func deleteConsumer(ctx context.Context, stream jetstream.Stream, cons jetstream.Consumer) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
}

// consumeStream is readStream over the whole stream (to its end as it was
// when the read began) for a reader that does its work on other
// goroutines anyway: fn runs on the consumer's delivery goroutine
// (jetstream's Consume), one message at a time and never after
// consumeStream returned. It costs less CPU per message than readStream:
// Consume resets one heartbeat timer where the Messages iterator arms and
// stops one and selects over channels for every message, and the consumer
// is a plain one (no acks, in memory) rather than an ordered one, whose
// own reading of every message's reply subject and lock it saves. What the
// ordered consumer adds is a restart after a break in delivery (a gap in
// its delivery sequence, or the consumer lost with its server); here such
// a break is an error, never a skipped message: every message up to the
// end is given to fn, in stream order, or the read fails.
func consumeStream(ctx context.Context, stream jetstream.Stream, fn func(Record) error) error {
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	last := info.State.LastSeq
	if last < 1 {
		return nil
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, Replicas: 1, InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer deleteConsumer(ctx, stream, cons)
	// mu is held while fn runs: consumeStream takes it (and sets stopped)
	// before it returns, so no fn runs past the return.
	var (
		mu        sync.Mutex
		stopped   bool
		lastErr   error
		delivered uint64 // the consumer's delivery sequence so far
	)
	done := make(chan error, 1)
	finish := func(err error) { // with mu held
		stopped = true
		done <- err
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		md, err := msg.Metadata()
		if err != nil {
			finish(fmt.Errorf("read stream metadata: %w", err))
			return
		}
		if md.Sequence.Consumer != delivered+1 {
			finish(fmt.Errorf("read stream: delivery broke off after message %d (the next came as delivery %d); read again", delivered, md.Sequence.Consumer))
			return
		}
		delivered++
		if err := fn(Record{Seq: md.Sequence.Stream, Subject: msg.Subject(), Data: msg.Data(), Stored: md.Timestamp}); err != nil {
			finish(err)
			return
		}
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			finish(nil)
		}
	}, jetstream.PullMaxMessages(4096), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// Consume pulls again after what it can recover from (a missed
		// heartbeat, a reconnect); what it cannot stops it, and this says
		// why.
		mu.Lock()
		lastErr = err
		mu.Unlock()
	}))
	if err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	var res error
	select {
	case res = <-done:
	case <-ctx.Done():
		res = ctx.Err()
	case <-cc.Closed():
		mu.Lock()
		res = fmt.Errorf("read stream: consumer stopped before the end of the stream (%v)", lastErr)
		mu.Unlock()
	}
	cc.Stop()
	mu.Lock()
	stopped = true
	mu.Unlock()
	select {
	case err := <-done: // finished while this returned for another reason
		if res == nil {
			res = err
		}
	default:
	}
	return res
}
