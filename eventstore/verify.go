package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
)

// Problem kinds reported by Verify.
const (
	ProblemAltered   = "altered"   // content no longer matches its hash
	ProblemMissing   = "missing"   // a predecessor in the chain is absent
	ProblemReordered = "reordered" // stored before the event it links to
	ProblemCorrupt   = "corrupt"   // not a readable event
	ProblemGap       = "gap"       // stream sequences absent
	ProblemPin       = "pin"       // stream digest differs from a pinned one
)

// Problem is one place where the log is not what was written.
type Problem struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	EventID string `json:"event_id,omitempty"`
	Kind    string `json:"kind"`
	Detail  string `json:"detail"`
}

func (p Problem) String() string {
	id := ""
	if p.EventID != "" {
		id = " event " + p.EventID
	}
	return fmt.Sprintf("seq %d (%s)%s: %s: %s", p.Seq, p.Subject, id, p.Kind, p.Detail)
}

// Checkpoint is the stream digest after a sequence.
type Checkpoint struct {
	Seq    uint64       `json:"seq"`
	Digest StreamDigest `json:"-"`
}

// VerifyReport is the result of re-reading a whole stream.
type VerifyReport struct {
	Messages    uint64       `json:"messages"`
	Subjects    int          `json:"subjects"`
	LastSeq     uint64       `json:"last_seq"`
	Digest      StreamDigest `json:"-"`
	Problems    []Problem    `json:"problems"`
	Checkpoints []Checkpoint `json:"-"`
}

// OK reports whether nothing was found.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// Pins are stream digests recorded earlier (seq -> digest); each must
	// match what the stream yields now.
	Pins map[uint64]StreamDigest
	// Progress, if set, is called every so often with the sequence reached.
	Progress func(seq, last uint64)
}

// Verify re-reads every message of a stream and checks each subject's hash
// chain: every event's hash matches its content and links to the hash of
// the subject's previous event. It also checks that stream sequences are
// contiguous and that pinned stream digests still match. Problems are
// listed in stream order; the first one is where the log was tampered with.
func Verify(ctx context.Context, stream jetstream.Stream, o VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	heads := map[string]string{}     // subject -> hash of its last event
	seen := map[string]bool{}        // every event hash seen so far
	unresolved := map[string][]int{} // unknown prev hash -> problem indexes
	var digest StreamDigest
	var prevSeq uint64
	err := ReadStream(ctx, stream, ReadOptions{}, func(r Record) error {
		rep.Messages++
		if r.Seq != prevSeq+1 {
			rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Subject: r.Subject, Kind: ProblemGap,
				Detail: fmt.Sprintf("sequences %d to %d are absent", prevSeq+1, r.Seq-1)})
		}
		prevSeq = r.Seq
		digest = digest.Next(r)
		if r.Seq%DigestEvery == 0 {
			rep.Checkpoints = append(rep.Checkpoints, Checkpoint{Seq: r.Seq, Digest: digest})
		}
		if pin, ok := o.Pins[r.Seq]; ok && pin != digest {
			rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Subject: r.Subject, Kind: ProblemPin,
				Detail: fmt.Sprintf("stream digest %s, pinned %s", digest, pin)})
		}
		if o.Progress != nil && r.Seq%4096 == 0 {
			o.Progress(r.Seq, 0)
		}
		head := heads[r.Subject]
		e, err := domain.DecodeEvent(r.Data)
		if err != nil {
			rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Subject: r.Subject, Kind: ProblemCorrupt, Detail: err.Error()})
			heads[r.Subject] = HeadOf(r.Data)
			return nil
		}
		if err := e.CheckHash(); err != nil {
			rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Subject: r.Subject, EventID: e.ID, Kind: ProblemAltered,
				Detail: "content does not match the event's hash"})
		}
		if e.PrevHash != head {
			p := Problem{Seq: r.Seq, Subject: r.Subject, EventID: e.ID}
			switch {
			case seen[e.PrevHash]:
				p.Kind, p.Detail = ProblemReordered, "links to an earlier event than the subject's previous one"
			default:
				p.Kind, p.Detail = ProblemMissing, "links to an event that is not in the stream before it"
				unresolved[e.PrevHash] = append(unresolved[e.PrevHash], len(rep.Problems))
			}
			rep.Problems = append(rep.Problems, p)
		}
		// An event that shows up after one linking to it was stored out of
		// order; the earlier report was not a loss.
		if idx, ok := unresolved[e.Hash]; ok {
			for _, i := range idx {
				rep.Problems[i].Kind = ProblemReordered
				rep.Problems[i].Detail = fmt.Sprintf("stored before the event it links to (event %s, seq %d)", e.ID, r.Seq)
			}
			delete(unresolved, e.Hash)
		}
		seen[e.Hash] = true
		heads[r.Subject] = e.Hash
		return nil
	})
	if err != nil {
		return rep, err
	}
	rep.Subjects = len(heads)
	rep.LastSeq = prevSeq
	rep.Digest = digest
	for seq := range o.Pins {
		if seq > prevSeq {
			rep.Problems = append(rep.Problems, Problem{Seq: seq, Kind: ProblemPin, Detail: "pinned sequence is beyond the end of the stream"})
		}
	}
	sort.SliceStable(rep.Problems, func(i, j int) bool { return rep.Problems[i].Seq < rep.Problems[j].Seq })
	return rep, nil
}

// ErrTampered is returned by callers that treat any problem as failure.
var ErrTampered = errors.New("the ledger does not verify")
