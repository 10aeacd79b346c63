package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/eventstore"
)

// Metadata keys the unmarshaler fills so the handler knows where a message
// sits in the stream.
const (
	mdSeq     = "ledger_seq"
	mdSubject = "ledger_subject"
	mdStored  = "ledger_stored"
)

// seqUnmarshaler turns a JetStream message into a watermill message carrying
// the stream sequence, which is the projection's checkpoint. It never fails:
// the watermill subscriber cannot handle an unmarshal error, and a bad
// payload is the projection's to record and skip.
type seqUnmarshaler struct{}

func (seqUnmarshaler) Unmarshal(msg jetstream.Msg) (*message.Message, error) {
	var seq uint64
	var stored time.Time
	if md, err := msg.Metadata(); err == nil {
		seq, stored = md.Sequence.Stream, md.Timestamp
	}
	m := message.NewMessage(strconv.FormatUint(seq, 10), msg.Data())
	m.Metadata.Set(mdSeq, strconv.FormatUint(seq, 10))
	m.Metadata.Set(mdSubject, msg.Subject())
	m.Metadata.Set(mdStored, strconv.FormatInt(stored.UnixNano(), 10))
	return m, nil
}

func recordOf(m *message.Message) (eventstore.Record, error) {
	seq, err := strconv.ParseUint(m.Metadata.Get(mdSeq), 10, 64)
	if err != nil || seq == 0 {
		return eventstore.Record{}, fmt.Errorf("message %s without stream sequence", m.UUID)
	}
	ns, _ := strconv.ParseInt(m.Metadata.Get(mdStored), 10, 64)
	return eventstore.Record{Seq: seq, Subject: m.Metadata.Get(mdSubject), Data: m.Payload, Stored: time.Unix(0, ns).UTC()}, nil
}

// LiveConfig wires the live subscription.
type LiveConfig struct {
	Store *eventstore.Reader
	// Dial opens the subscriber's own NATS connection: the watermill
	// subscriber drains its connection when it closes.
	Dial func() (*nats.Conn, error)
	Log  *slog.Logger
	// Restart, when it receives, tears the subscription down and resumes
	// from the checkpoint: the freshness tracker sends on it when the
	// projection stalls behind the stream (consumer lost or wedged).
	Restart <-chan struct{}
}

// errRestartRequested stops a router whose subscription looks stalled.
var errRestartRequested = errors.New("restart requested: projection stalled behind the stream")

// RunLive keeps the projection following the stream until ctx ends: it
// first catches up in bulk, then runs a watermill router whose handler
// applies each message and lets the router ack it after the Pebble commit.
// If the handler fails for good (after the Retry middleware), the router is
// torn down and rebuilt from the checkpoint, so no message is ever skipped
// by a nack racing its successors.
func (p *Projection) RunLive(ctx context.Context, cfg LiveConfig) error {
	log := cfg.Log
	if log == nil {
		log = p.log
	}
	backoff := 100 * time.Millisecond
	for {
		if err := p.CatchUp(ctx, cfg.Store, nil); err != nil && ctx.Err() == nil {
			log.Warn("projection catch-up failed", "err", err)
		}
		started := time.Now()
		err := p.runRouter(ctx, cfg, log)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond // it ran well; this is a new failure
		}
		log.Warn("projection subscription stopped; restarting from checkpoint", "applied", p.Applied(), "err", err)
		if errors.Is(err, errRestartRequested) {
			continue // the stream is reachable, the subscription was not: at once
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (p *Projection) runRouter(ctx context.Context, cfg LiveConfig, log *slog.Logger) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	nc, err := cfg.Dial()
	if err != nil {
		return err
	}
	wlog := watermill.NewSlogLoggerWithLevelMapping(log.With("component", "watermill"), map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug, // "got msg" per message is not info
	})
	if cfg.Restart != nil {
		select { // a request made before this start is already honoured
		case <-cfg.Restart:
		default:
		}
		go func() {
			select {
			case <-cfg.Restart:
				cancel(errRestartRequested)
			case <-ctx.Done():
			}
		}()
	}
	start := p.Applied() + 1
	consumerName := "ledger-projection-" + watermill.NewShortUUID()
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:           nc,
		Logger:         wlog,
		AckAsync:       true,
		AckWaitTimeout: 30 * time.Second,
		Unmarshaler:    seqUnmarshaler{},
		// A consumer that is gone (deleted, expired while NATS was away,
		// lost with its server) never delivers again: start over.
		ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				cancel(fmt.Errorf("projection consumer lost: %w", err))
			}
		})},
		ResourceInitializer: func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			cons, err := js.CreateOrUpdateConsumer(ctx, topic, jetstream.ConsumerConfig{
				Name:              consumerName,
				DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
				OptStartSeq:       start,
				AckPolicy:         jetstream.AckExplicitPolicy,
				MaxAckPending:     4096,
				InactiveThreshold: 10 * time.Minute,
				FilterSubject:     eventstore.SubjectPrefix + ">",
				// The consumer's state (delivered, acked) would otherwise be
				// a file the server rewrites, with an fsync, as acks come
				// in: about a sixteenth of the CPU recording a use cost.
				// Nothing reads it back: a new router starts a new consumer
				// at the projection's own checkpoint.
				MemoryStorage: true,
			})
			if err != nil {
				return nil, nil, fmt.Errorf("projection consumer: %w", err)
			}
			return cons, func(ctx context.Context, _ watermill.LoggerAdapter) {
				dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer dcancel()
				_ = js.DeleteConsumer(dctx, topic, consumerName)
			}, nil
		},
	})
	if err != nil {
		nc.Close()
		return fmt.Errorf("watermill subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, wlog)
	if err != nil {
		sub.Close()
		return err
	}
	var failed atomic.Bool
	// Middlewares run in the order added. The outermost sees a message only
	// once Retry has given up on it; the router would then nack it while
	// later messages may already be applied, so instead it stops the router
	// and the supervisor resumes from the checkpoint.
	stopOnFailure := func(h message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) {
			out, err := h(m)
			if err != nil && !failed.Swap(true) {
				cancel(fmt.Errorf("apply message %s: %w", m.UUID, err))
			}
			return out, err
		}
	}
	router.AddMiddleware(
		stopOnFailure,
		middleware.Retry{MaxRetries: 5, InitialInterval: 20 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2, Logger: wlog}.Middleware,
		middleware.Recoverer,
	)
	// The router runs each message's handler on a goroutine of its own,
	// whose stack starts small; applying a message grew it several times
	// over, and copying those stacks was about a seventh of the CPU the
	// live apply of a use took. One long-lived goroutine applies instead,
	// and its stack stays grown.
	applies := make(chan liveApply)
	stop, applier := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(applier)
		for {
			select {
			case a := <-applies:
				a.done <- p.applyLive(a.rec)
			case <-stop:
				return
			}
		}
	}()
	router.AddConsumerHandler("projection", cfg.Store.StreamName(), sub, func(m *message.Message) error {
		if failed.Load() {
			return errors.New("projection subscription is restarting")
		}
		rec, err := recordOf(m)
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		select {
		case applies <- liveApply{rec: rec, done: done}:
			return <-done
		case <-stop: // a handler the router's close did not wait for
			return errors.New("projection subscription stopped")
		}
	})
	err = router.Run(ctx)
	_ = router.Close()
	_ = sub.Close()
	close(stop)
	<-applier
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// applyLive applies one message for the live router; a panic becomes the
// message's error, as the router's Recoverer made it when the handler's
// own goroutine applied.
func (p *Projection) applyLive(rec eventstore.Record) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic applying seq %d: %v\n%s", rec.Seq, r, debug.Stack())
		}
	}()
	return p.ApplyBatch([]eventstore.Record{rec})
}

// liveApply is a message for the live applier, and where it answers.
type liveApply struct {
	rec  eventstore.Record
	done chan error
}

// CatchUp applies everything the stream holds beyond the checkpoint, in
// large batches through an ordered consumer. progress, if set, is called
// after each batch with the applied and target sequences.
func (p *Projection) CatchUp(ctx context.Context, store *eventstore.Reader, progress func(applied, target uint64)) error {
	target, err := store.LastSeq(ctx)
	if err != nil {
		return err
	}
	return p.catchUp(ctx, store, target, catchUpBatch, progress)
}

// catchUpBatch is how many messages CatchUp applies per Pebble batch.
const catchUpBatch = 2048

// catchUp applies the stream from the checkpoint up to target (and what
// follows it in the same read) in batches of batchSize. The read runs ahead
// of the apply by at most two batches, on its own goroutine, and starts
// each batch's order-independent checks (precheck.go) as soon as it has
// read it, so that the stream read, the checks and the apply overlap; the
// batches are applied in order, on the caller's goroutine, and the first
// failure stops the read.
func (p *Projection) catchUp(ctx context.Context, store *eventstore.Reader, target uint64, batchSize int, progress func(applied, target uint64)) error {
	if target <= p.Applied() {
		if progress != nil {
			progress(p.Applied(), target)
		}
		return nil
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type readBatch struct {
		recs []eventstore.Record
		pre  *checkPipeline // nil: the apply checks them
	}
	const ahead = 2
	batches := make(chan readBatch, ahead)
	// The checks' storage goes round: the read takes one, the apply
	// gives it back.
	free := make(chan []checked, ahead+2)
	readErr := make(chan error, 1)
	from := p.Applied() + 1
	go func() {
		defer close(batches)
		send := func(recs []eventstore.Record) error {
			var buf []checked
			select {
			case buf = <-free:
			default:
			}
			b := readBatch{recs: recs, pre: p.startChecks(recs, buf)}
			select {
			case batches <- b:
				return nil
			case <-rctx.Done():
				if b.pre != nil {
					b.pre.close()
				}
				return rctx.Err()
			}
		}
		batch := make([]eventstore.Record, 0, batchSize)
		err := store.ReadFrom(rctx, from, func(r eventstore.Record) error {
			batch = append(batch, r)
			if len(batch) == batchSize || r.Seq >= target {
				if err := send(batch); err != nil {
					return err
				}
				batch = make([]eventstore.Record, 0, batchSize)
			}
			return nil
		})
		if err == nil && len(batch) > 0 {
			err = send(batch)
		}
		readErr <- err
	}()
	var applyErr error
	for b := range batches {
		if applyErr == nil {
			applyErr = p.applyBatch(b.recs, b.pre)
			if progress != nil {
				progress(p.Applied(), target)
			}
			if applyErr != nil {
				cancel()
			}
		} // else the read is stopping
		if b.pre != nil {
			select {
			case free <- b.pre.close():
			default:
			}
		}
	}
	err := <-readErr
	if applyErr != nil {
		return applyErr
	}
	return err
}
