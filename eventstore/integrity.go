package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/handlers/ports"
)

// ErrStreamTampered means the stream is no longer the ledger's: something
// removed, could remove, or replaced its messages, or froze it. The ledger
// reports it and never repairs the stream by itself.
var ErrStreamTampered = ports.ErrStreamTampered

// StreamExpectations are what a projection knows about the stream it has
// applied.
type StreamExpectations struct {
	// Applied is the last sequence applied: the stream must reach it.
	Applied uint64
	// Created is the stream's creation time as first seen; a different one
	// means the stream was deleted and created again. Zero: not checked.
	Created time.Time
}

// CheckStream reads the stream's configuration and state and lists every way
// in which it is not the ledger's append-only log: deletes or purges allowed,
// a limit that removes or refuses messages, sealed, messages removed (first
// sequence not 1, deleted sequences inside), fewer messages than were
// applied, or re-created. An empty list means it is intact as far as its
// metadata shows; CheckDigestWindow checks content.
func (s *Reader) CheckStream(ctx context.Context, exp StreamExpectations) (findings []string, info *jetstream.StreamInfo, err error) {
	info, err = s.stream.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return []string{"the stream does not exist"}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("stream info: %w", err)
	}
	return Findings(info, exp), info, nil
}

// Findings is CheckStream on stream info already read.
func Findings(info *jetstream.StreamInfo, exp StreamExpectations) []string {
	var out []string
	c, st := info.Config, info.State
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if !c.DenyDelete {
		add("deny_delete is off")
	}
	if !c.DenyPurge {
		add("deny_purge is off")
	}
	if c.MaxMsgs > 0 {
		add("max_msgs is %d", c.MaxMsgs)
	}
	if c.MaxBytes > 0 {
		add("max_bytes is %d", c.MaxBytes)
	}
	if c.MaxAge > 0 {
		add("max_age is %s", c.MaxAge)
	}
	if c.MaxMsgsPerSubject > 0 {
		add("max_msgs_per_subject is %d", c.MaxMsgsPerSubject)
	}
	if c.Sealed {
		add("the stream is sealed")
	}
	if st.LastSeq > 0 && st.FirstSeq != 1 {
		add("first sequence is %d, not 1: messages were removed", st.FirstSeq)
	}
	if st.NumDeleted > 0 {
		add("%d messages were removed from inside the stream", st.NumDeleted)
	}
	if st.LastSeq < exp.Applied {
		add("last sequence is %d, but this instance has applied up to %d", st.LastSeq, exp.Applied)
	}
	if !exp.Created.IsZero() && !info.Created.Equal(exp.Created) {
		add("the stream was created at %s, not %s as first seen: it was deleted and created again",
			info.Created.UTC().Format(time.RFC3339Nano), exp.Created.UTC().Format(time.RFC3339Nano))
	}
	return out
}

// CheckDigestWindow re-reads the messages after checkpoint from up to
// checkpoint to and checks that they still fold into to's digest: the
// content the projection once applied is still there, unaltered.
func (s *Reader) CheckDigestWindow(ctx context.Context, from, to Checkpoint) error {
	if to.Seq <= from.Seq {
		return nil
	}
	d := from.Digest
	errDone := errors.New("window read")
	next := from.Seq + 1
	err := s.Read(ctx, ReadOptions{From: next}, func(r Record) error {
		if r.Seq != next {
			return fmt.Errorf("%w: sequence %d is missing", ErrStreamTampered, next)
		}
		d = d.Next(r)
		if r.Seq == to.Seq {
			return errDone
		}
		next++
		return nil
	})
	switch {
	case errors.Is(err, errDone):
	case err != nil:
		return err
	default:
		return fmt.Errorf("%w: the stream ends before sequence %d", ErrStreamTampered, to.Seq)
	}
	if d != to.Digest {
		return fmt.Errorf("%w: the stream digest at sequence %d is %s, but %s was recorded when it was applied", ErrStreamTampered, to.Seq, d, to.Digest)
	}
	return nil
}
