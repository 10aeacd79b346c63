package eventstore

import (
	"context"
	"errors"
	"fmt"
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
		AllowDirect: true,
		Duplicates:  2 * time.Minute,
	}
}

// Store appends to and reads from the ledger stream.
type Store struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	name    string
	appends *prometheus.CounterVec
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
	return &Store{js: js, stream: stream, name: sc.Name, appends: newAppendCounter()}, nil
}

// JetStream exposes the client for subscribers built on it.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// StreamName is the ledger stream's name.
func (s *Store) StreamName() string { return s.name }

// Expect is the optimistic-concurrency condition of an append.
type Expect struct {
	check bool
	seq   uint64
}

// AnyVersion appends whatever the subject holds: for facts that decide
// nothing (a use, a failed login).
func AnyVersion() Expect { return Expect{} }

// AtVersion appends only if the subject's last message has stream sequence
// seq (0: the subject is empty).
func AtVersion(seq uint64) Expect { return Expect{check: true, seq: seq} }

// Append writes events to one subject in order and returns the stream
// sequence of the last one. With AtVersion, the first event must find the
// subject at that version and each following one finds its predecessor, so
// the events land together or the append fails with ErrConflict. Each event's
// ID is its Nats-Msg-Id: a publish retried after a lost ack is recognised by
// the server and not written twice.
func (s *Store) Append(ctx context.Context, subject string, expect Expect, events ...domain.Event) (uint64, error) {
	var seq uint64
	for i, e := range events {
		if e.ID == "" {
			return 0, fmt.Errorf("append %s to %s: event without id", e.Type, subject)
		}
		data, err := e.Encode()
		if err != nil {
			return 0, err
		}
		opts := []jetstream.PublishOpt{jetstream.WithMsgID(e.ID), jetstream.WithExpectStream(s.name)}
		if expect.check {
			want := expect.seq
			if i > 0 {
				want = seq
			}
			opts = append(opts, jetstream.WithExpectLastSequencePerSubject(want))
		}
		seq, err = s.publish(ctx, subject, data, opts)
		if err != nil {
			return 0, fmt.Errorf("append %s to %s: %w", e.Type, subject, err)
		}
	}
	return seq, nil
}

// publish retries transient failures (a lost ack, a leader election) with
// the same message id, so a retry of a write that did land returns the
// original sequence instead of a second copy.
func (s *Store) publish(ctx context.Context, subject string, data []byte, opts []jetstream.PublishOpt) (uint64, error) {
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := s.js.Publish(actx, subject, data, opts...)
		cancel()
		if err == nil {
			if ack.Duplicate {
				s.appends.WithLabelValues("duplicate").Inc()
			} else {
				s.appends.WithLabelValues("ok").Inc()
			}
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			if apiErr.ErrorCode == codeWrongLastSequence || apiErr.ErrorCode == codeWrongLastSequenceConstant {
				s.appends.WithLabelValues("conflict").Inc()
				return 0, ErrConflict
			}
			s.appends.WithLabelValues("error").Inc()
			return 0, err
		}
		if attempt >= 6 || ctx.Err() != nil {
			s.appends.WithLabelValues("error").Inc()
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// Publication is one event of a fire-and-forget batch.
type Publication struct {
	Subject string
	Event   domain.Event
	// MsgID de-duplicates across instances; defaults to the event id.
	MsgID string
}

// AppendBatch publishes independent facts without concurrency checks,
// pipelined, and returns how many were stored. It is the path for uses,
// which must not queue behind each other's round trips.
func (s *Store) AppendBatch(ctx context.Context, pubs []Publication) (stored int, err error) {
	futures := make([]jetstream.PubAckFuture, 0, len(pubs))
	for _, p := range pubs {
		data, encErr := p.Event.Encode()
		if encErr != nil {
			err = errors.Join(err, encErr)
			continue
		}
		id := p.MsgID
		if id == "" {
			id = p.Event.ID
		}
		f, pubErr := s.js.PublishMsgAsync(&nats.Msg{Subject: p.Subject, Data: data},
			jetstream.WithMsgID(id), jetstream.WithExpectStream(s.name))
		if pubErr != nil {
			err = errors.Join(err, pubErr)
			continue
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
			stored++
			s.appends.WithLabelValues("ok").Inc()
		case e := <-f.Err():
			err = errors.Join(err, e)
			s.appends.WithLabelValues("error").Inc()
		case <-ctx.Done():
			return stored, errors.Join(err, ctx.Err())
		}
	}
	return stored, err
}

// LastSubjectSeq is the stream sequence of the subject's last message, 0 if
// it has none.
func (s *Store) LastSubjectSeq(ctx context.Context, subject string) (uint64, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last message on %s: %w", subject, err)
	}
	return m.Sequence, nil
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
// the stream as it was when the read began, in order, using an ordered
// consumer with large pull batches. It is the bulk path (rebuild, audit).
func (s *Store) ReadFrom(ctx context.Context, from uint64, fn func(Record) error) error {
	last, err := s.LastSeq(ctx)
	if err != nil {
		return err
	}
	if from < 1 {
		from = 1
	}
	if last < from {
		return nil
	}
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
	})
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
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
