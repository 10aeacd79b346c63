package eventstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/domain"
)

// ErrConflict means the subject moved on since the caller read it: another
// writer appended first. The caller re-reads and decides again.
var ErrConflict = errors.New("eventstore: subject changed since it was read")

// JetStream error codes for a failed Nats-Expected-Last-Subject-Sequence check.
const (
	codeWrongLastSequence         jetstream.ErrorCode = 10071
	codeWrongLastSequenceConstant jetstream.ErrorCode = 10164
)

// Config is the stream the ledger lives in.
type Config struct {
	Stream   string // default DefaultStream
	Replicas int    // 1 for the embedded server, 3 on a cluster
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

// Store appends to and reads from the ledger stream.
type Store struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	name    string
	appends *prometheus.CounterVec
	heads   *headCache
}

// Open creates the stream if it does not exist, or checks it.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sc := StreamConfig(cfg)
	stream, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, sc)
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", sc.Name, err)
	}
	info := stream.CachedInfo().Config
	if !info.DenyDelete || !info.DenyPurge {
		return nil, fmt.Errorf("stream %s allows deletes or purges; the ledger must be append-only", sc.Name)
	}
	return &Store{js: js, stream: stream, name: sc.Name, appends: newAppendCounter(), heads: newHeadCache(100_000)}, nil
}

// JetStream exposes the client for subscribers built on it.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// StreamName is the ledger stream's name.
func (s *Store) StreamName() string { return s.name }

// Version is where a subject stands: the stream sequence of its last
// message (0 if empty) and that message's hash, the chain head the next
// event links to. Appending "at a version" is the optimistic-concurrency
// condition: it succeeds only if nobody appended since.
type Version struct {
	Seq  uint64
	Head string
}

// Append writes events to one subject in order, each sealed into the
// subject's hash chain, and returns the subject's new version. The first
// event must find the subject at v and each following one finds its
// predecessor, so a conflicting writer makes the append fail with
// ErrConflict. Each event's ID is its Nats-Msg-Id, so a publish retried
// after a lost ack is not written twice.
func (s *Store) Append(ctx context.Context, subject string, v Version, events ...domain.Event) (Version, error) {
	for _, e := range events {
		if e.ID == "" {
			return Version{}, fmt.Errorf("append %s to %s: event without id", e.Type, subject)
		}
		if err := e.Seal(v.Head); err != nil {
			return Version{}, err
		}
		data, err := e.Encode()
		if err != nil {
			return Version{}, err
		}
		seq, _, err := s.publish(ctx, subject, data, e.ID, e.ID, v.Seq)
		if err != nil {
			return Version{}, fmt.Errorf("append %s to %s: %w", e.Type, subject, err)
		}
		v = Version{Seq: seq, Head: e.Hash}
	}
	s.heads.remember(subject, v)
	return v, nil
}

// publish retries transient failures (a lost ack, a leader election) with
// the same message id. A single server checks the expected subject sequence
// before the message id, so a retry of a write that did land comes back as a
// conflict; publish then looks for its own event right after the expected
// version and, if it is there, returns its sequence.
func (s *Store) publish(ctx context.Context, subject string, data []byte, msgID, eventID string, expected uint64) (seq uint64, duplicate bool, err error) {
	opts := []jetstream.PublishOpt{
		jetstream.WithMsgID(msgID), jetstream.WithExpectStream(s.name),
		jetstream.WithExpectLastSequencePerSubject(expected),
	}
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
			return ack.Sequence, ack.Duplicate, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			if apiErr.ErrorCode == codeWrongLastSequence || apiErr.ErrorCode == codeWrongLastSequenceConstant {
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
			return 0, false, err
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
	// At, if known, is the subject's version as a projection last saw it.
	// It spares a read of the subject's last message from the stream, which
	// makes the server load that message's whole block into memory.
	At *Version
}

// AppendFacts appends events that decide nothing (a use, a failed login),
// each at whatever version its subject has: the store links it to the
// subject's current head, from its cache of heads or read from the stream,
// and retries on a conflict. Facts on one subject go in order, one after the
// other (each links to the one before); different subjects proceed in
// parallel. It returns how many were stored.
func (s *Store) AppendFacts(ctx context.Context, pubs []Publication) (stored int, err error) {
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
			for _, p := range group {
				e := s.appendFact(ctx, p)
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

func (s *Store) appendFact(ctx context.Context, p Publication) error {
	msgID := p.MsgID
	if msgID == "" {
		msgID = p.Event.ID
	}
	for attempt := 1; ; attempt++ {
		v, ok := s.heads.get(p.Subject)
		if p.At != nil && (!ok || p.At.Seq > v.Seq) {
			v, ok = *p.At, true
		}
		if !ok {
			var err error
			if v, err = s.Head(ctx, p.Subject); err != nil {
				return err
			}
		}
		p.At = nil // a conflict means the hint is stale: read the stream next time
		e := p.Event
		if err := e.Seal(v.Head); err != nil {
			return err
		}
		data, err := e.Encode()
		if err != nil {
			return err
		}
		seq, dup, err := s.publish(ctx, p.Subject, data, msgID, e.ID, v.Seq)
		if err == nil {
			if dup {
				// Another instance stored this fact first: the head is
				// its copy, whose hash we do not know.
				s.heads.forget(p.Subject)
			} else {
				s.heads.remember(p.Subject, Version{Seq: seq, Head: e.Hash})
			}
			return nil
		}
		s.heads.forget(p.Subject)
		if !errors.Is(err, ErrConflict) || attempt == 20 {
			return fmt.Errorf("append %s to %s: %w", e.Type, p.Subject, err)
		}
	}
}

// Head reads a subject's current version from the stream.
func (s *Store) Head(ctx context.Context, subject string) (Version, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Version{}, nil
	}
	if err != nil {
		return Version{}, fmt.Errorf("last message on %s: %w", subject, err)
	}
	return Version{Seq: m.Sequence, Head: HeadOf(m.Data)}, nil
}

// HeadOf is the chain head a stored message leaves behind: its own hash, or
// for a message that is not a readable event, the hash of its raw bytes, so
// that the chain can continue past it (verify reports it).
func HeadOf(data []byte) string {
	var h struct {
		Hash string `json:"hash"`
	}
	if json.Unmarshal(data, &h) == nil && h.Hash != "" {
		return h.Hash
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// LastEvent returns the last event on a subject and its sequence.
func (s *Store) LastEvent(ctx context.Context, subject string) (domain.Event, uint64, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return domain.Event{}, 0, fmt.Errorf("last message on %s: %w", subject, err)
	}
	e, err := domain.DecodeEvent(m.Data)
	if err != nil {
		return domain.Event{}, 0, fmt.Errorf("last message on %s (seq %d): %w", subject, m.Sequence, err)
	}
	return e, m.Sequence, nil
}

// LastSeq is the sequence of the newest message in the stream.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
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
func (s *Store) ReadFrom(ctx context.Context, from uint64, fn func(Record) error) error {
	return ReadStream(ctx, s.stream, ReadOptions{From: from}, fn)
}

// ReadSubject calls fn for every message of one subject, in order.
func (s *Store) ReadSubject(ctx context.Context, subject string, fn func(Record) error) error {
	return ReadStream(ctx, s.stream, ReadOptions{Subject: subject}, fn)
}

// Stream is the underlying JetStream stream.
func (s *Store) Stream() jetstream.Stream { return s.stream }

// ReadOptions narrows a read.
type ReadOptions struct {
	From    uint64 // first sequence (default 1)
	Subject string // one exact subject; empty for the whole stream
}

// ReadStream reads any stream (the ledger, a mirror, or a copy under test)
// through an ordered consumer with large pull batches, from the start
// position to the stream's end as it was when the read began.
func ReadStream(ctx context.Context, stream jetstream.Stream, o ReadOptions, fn func(Record) error) error {
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
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
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
