package eventstore

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
)

// Problem kinds reported by Verify.
const (
	ProblemAltered   = "altered"   // content no longer matches its hash
	ProblemSignature = "signature" // not signed by the ledger's key in force
	ProblemMissing   = "missing"   // a predecessor in the chain is absent
	ProblemReordered = "reordered" // stored before the event it links to
	ProblemCorrupt   = "corrupt"   // not a readable event
	ProblemGap       = "gap"       // stream sequences absent
	ProblemPin       = "pin"       // stream digest differs from a pinned one
	ProblemMisplaced = "misplaced" // on a use subject, but not a standalone use of its user
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
	Messages uint64 `json:"messages"`
	// Subjects are the hash chains; use subjects have none, and their
	// events (Uses) are checked one by one: hash, no predecessor, a use of
	// the subject's user, signature.
	Subjects    int          `json:"subjects"`
	Uses        uint64       `json:"uses"`
	LastSeq     uint64       `json:"last_seq"`
	Digest      StreamDigest `json:"-"`
	Problems    []Problem    `json:"problems"`
	Checkpoints []Checkpoint `json:"-"`
	// Keys are the signing keys the log put in force, in order.
	Keys []domain.PublicKey `json:"-"`
	// Anchored: the key chain contains one of VerifyOptions.Trusted. Without
	// trusted keys the signatures are checked against the log's own key
	// chain only, which proves the events share one signer but not who.
	Anchored bool `json:"anchored"`
}

// OK reports whether nothing was found.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// Pins are stream digests recorded earlier (seq -> digest); each must
	// match what the stream yields now.
	Pins map[uint64]StreamDigest
	// Trusted are public keys the auditor trusts; one of them must be in the
	// log's key chain.
	Trusted []domain.PublicKey
	// Progress, if set, is called every so often with the sequence reached.
	Progress func(seq, last uint64)
	// Workers check signatures in parallel (default: the number of CPUs).
	Workers int
}

// Verify re-reads every message of a stream and checks each event the way
// an instance does before applying it: its hash matches its content, it
// links to the hash of the subject's previous authentic event, and it is
// signed by the ledger's key in force at its place in the log (with the
// Ed25519 signature, so the public keys suffice). An event that fails
// does not become its subject's head, so the events after it are judged
// against what the ledger really wrote. Verify also checks that stream
// sequences are contiguous and that pinned stream digests still match.
// Use subjects (UseSubject) hold no chain: each of their events is checked
// on its own (hash, no predecessor, a use of the subject's user, signature;
// see domain.JudgeUse), so dropping a use there is not detected by Verify,
// only by a pinned digest; a lost use can only end a session sooner.
// Problems are listed in stream order.
//
// Memory is bounded by the number of subjects (the last authentic hash of
// each), not by the number of events: no hash is kept once its subject has
// moved on. Telling a broken link apart as missing or reordered needs to
// know whether the hash it names was an authentic event earlier in the
// stream; a clean stream never asks, and a stream with broken links is read
// a second time to answer for those links only (memory bounded by the
// number of problems).
func (s *Reader) Verify(ctx context.Context, o VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	heads := map[string]string{} // subject -> hash of its last authentic event
	// Broken links: the prev hash they name -> problem indexes. pending are
	// unresolved so far; every broken link is also in links, for the second
	// read.
	pending := map[string][]int{}
	links := map[string][]int{}
	var chain domain.KeyChain
	var digest StreamDigest
	var prevSeq uint64
	problem := func(r Record, e domain.Event, kind, detail string) {
		rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Subject: r.Subject, EventID: e.ID, Kind: kind, Detail: detail})
	}
	check := func(it *verifyItem) bool {
		r, e := it.rec, it.event
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
		if userID, ok := UseSubjectUser(r.Subject); ok {
			rep.Uses++
			if kind, detail := judgeVerifyUse(it, userID, &chain); kind != "" {
				problem(r, e, kind, detail)
			}
			return true
		}
		switch kind, detail := judgeVerifyItem(it, heads, &chain); kind {
		case "":
		case ProblemMissing:
			// Or reordered: settled below if the event it links to comes
			// later, by the second read if it came earlier.
			idx := len(rep.Problems)
			problem(r, e, kind, detail)
			pending[e.PrevHash] = append(pending[e.PrevHash], idx)
			links[e.PrevHash] = append(links[e.PrevHash], idx)
			return true
		default:
			problem(r, e, kind, detail)
			return true
		}
		// An event that shows up after one linking to it was stored out of
		// order; the earlier report was not a loss.
		if idx, ok := pending[e.Hash]; ok {
			for _, i := range idx {
				rep.Problems[i].Kind = ProblemReordered
				rep.Problems[i].Detail = fmt.Sprintf("stored before the event it links to (event %s, seq %d)", e.ID, r.Seq)
			}
			delete(pending, e.Hash)
		}
		return true
	}
	err := verifyPipeline(ctx, s.stream, o.Workers, check)
	if err != nil {
		return rep, err
	}
	rep.Subjects = len(heads)
	rep.LastSeq = prevSeq
	rep.Digest = digest
	rep.Keys = chain.Order
	rep.Anchored = chain.Anchored(o.Trusted)
	if len(links) > 0 {
		if err := s.linksToEarlier(ctx, o.Workers, links, rep.Problems); err != nil {
			return rep, err
		}
	}
	if len(o.Trusted) > 0 && !rep.Anchored {
		detail := "the log introduces no signing key"
		if len(chain.Order) > 0 {
			detail = fmt.Sprintf("none of the log's signing keys (%s) is among the trusted public keys", keyIDs(chain.Order))
		}
		rep.Problems = append(rep.Problems, Problem{Seq: 1, Subject: KeysSubject, Kind: ProblemSignature, Detail: detail})
	}
	for seq := range o.Pins {
		if seq > prevSeq {
			rep.Problems = append(rep.Problems, Problem{Seq: seq, Kind: ProblemPin, Detail: "pinned sequence is beyond the end of the stream"})
		}
	}
	sort.SliceStable(rep.Problems, func(i, j int) bool { return rep.Problems[i].Seq < rep.Problems[j].Seq })
	return rep, nil
}

// judgeVerifyItem is domain.Judge's order (hash, link, then signature),
// spelt out because the hashes were checked ahead of time on several cores
// and a broken link is reported as ProblemMissing for the caller to refine.
// An authentic event becomes its subject's head ("" returned).
func judgeVerifyItem(it *verifyItem, heads map[string]string, chain *domain.KeyChain) (kind, detail string) {
	r, e := it.rec, it.event
	head, ok := heads[r.Subject]
	if !ok {
		heads[r.Subject] = ""
	}
	switch {
	case it.decodeErr != nil:
		return ProblemCorrupt, it.decodeErr.Error()
	case it.hashErr != nil:
		return ProblemAltered, "content does not match the event's hash"
	case e.PrevHash != head:
		return ProblemMissing, "links to an event that is not in the stream before it"
	}
	// Last, because it folds key events into the chain.
	if err := chain.Authenticate(e, it); err != nil {
		return ProblemSignature, err.Error()
	}
	heads[r.Subject] = e.Hash
	return "", ""
}

// judgeVerifyUse is domain.JudgeUse for a message on a use subject: no
// chain to follow, so it neither reads nor moves a head.
func judgeVerifyUse(it *verifyItem, userID string, chain *domain.KeyChain) (kind, detail string) {
	if it.decodeErr != nil {
		return ProblemCorrupt, it.decodeErr.Error()
	}
	reason, err := domain.JudgeUse(it.event, it.hashErr, userID, func(e domain.Event) error { return chain.Authenticate(e, it) })
	switch reason {
	case "":
		if err != nil { // a key this reader cannot check with: not authentic to it
			return ProblemSignature, err.Error()
		}
		return "", ""
	case domain.RejectHash:
		return ProblemAltered, "content does not match the event's hash"
	case domain.RejectSignature:
		return ProblemSignature, err.Error()
	default:
		return ProblemMisplaced, err.Error()
	}
}

// linksToEarlier re-reads the stream, judging it as Verify did, up to the
// last broken link, and marks as reordered each broken link whose hash was
// an authentic event before it: it links to an earlier event than its
// subject's previous one. links maps a hash to the problems naming it.
func (s *Reader) linksToEarlier(ctx context.Context, workers int, links map[string][]int, problems []Problem) error {
	var last uint64
	for _, idx := range links {
		for _, i := range idx {
			last = max(last, problems[i].Seq)
		}
	}
	heads := map[string]string{}
	var chain domain.KeyChain
	return verifyPipeline(ctx, s.stream, workers, func(it *verifyItem) bool {
		if it.rec.Seq >= last {
			return false
		}
		if userID, ok := UseSubjectUser(it.rec.Subject); ok {
			judgeVerifyUse(it, userID, &chain) // nothing links to a use
			return true
		}
		if kind, _ := judgeVerifyItem(it, heads, &chain); kind != "" {
			return true
		}
		idx, ok := links[it.event.Hash]
		if !ok {
			return true
		}
		rest := idx[:0]
		for _, i := range idx {
			if problems[i].Seq > it.rec.Seq {
				problems[i].Kind = ProblemReordered
				problems[i].Detail = "links to an earlier event than the subject's previous one"
			} else {
				rest = append(rest, i)
			}
		}
		if len(rest) == 0 {
			delete(links, it.event.Hash)
		} else {
			links[it.event.Hash] = rest
		}
		return len(links) > 0
	})
}

func keyIDs(keys []domain.PublicKey) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return strings.Join(ids, ", ")
}

// verifyItem is one message on its way through the pipeline: decoded,
// hash-checked and signature-checked by a worker, then judged in order.
type verifyItem struct {
	rec       Record
	event     domain.Event
	decodeErr error
	hashErr   error
	// The signature was checked ahead of time under the key the event
	// names, if that key was known by then; the in-order check reuses the
	// result when the key in force is that key.
	sigKey ed25519.PublicKey
	sigErr error
	done   chan struct{}
}

// Verify makes a verifyItem a domain.Verifier for its own event.
func (it *verifyItem) Verify(e domain.Event, key domain.PublicKey) error {
	if it.sigKey != nil && it.sigKey.Equal(key.Key) {
		return it.sigErr
	}
	return domain.VerifySignature(e, key)
}

// verifyPipeline reads the stream, checks hashes and Ed25519 signatures on
// several cores (about 80 µs each on one), and hands the results to judge
// in stream order, until judge returns false. Keys are learnt from key
// events as they are read, before they are judged; judge only trusts a
// result for the key it finds in force. Memory is bounded by the channels'
// capacity and the keys, whatever the stream's length.
func verifyPipeline(ctx context.Context, stream jetstream.Stream, workers int, judge func(*verifyItem) bool) error {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *verifyItem, 1024)
	ordered := make(chan *verifyItem, 4096)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if it.decodeErr == nil {
					it.hashErr = it.event.CheckHash()
					if it.hashErr == nil && it.sigKey != nil {
						it.sigErr = domain.VerifySignature(it.event, domain.PublicKey{ID: it.event.KeyID, Key: it.sigKey})
					}
				}
				close(it.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(ordered)
		defer close(work)
		known := map[string]ed25519.PublicKey{}
		readErr <- readStream(ctx, stream, ReadOptions{}, func(r Record) error {
			it := &verifyItem{rec: r, done: make(chan struct{})}
			it.event, it.decodeErr = domain.DecodeEvent(r.Data)
			if it.decodeErr == nil {
				it.sigKey = known[it.event.KeyID]
				if k, ok := domain.KeyNamedBy(it.event); ok {
					known[k.ID] = k.Key
				}
			}
			select {
			case ordered <- it:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case work <- it:
			case <-ctx.Done():
				return ctx.Err()
			}
			return nil
		})
	}()
	stopped := false
	for it := range ordered {
		if stopped {
			continue // drain: the reader stops at the cancel
		}
		<-it.done
		if !judge(it) {
			stopped = true
			cancel()
		}
	}
	wg.Wait()
	err := <-readErr
	if stopped && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// ErrTampered is returned by callers that treat any problem as failure.
var ErrTampered = errors.New("the ledger does not verify")
