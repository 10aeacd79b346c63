package eventstore

import (
	"sync"
	"sync/atomic"

	"github.com/sessionledger/ledger/domain"
)

// Verdicts of a speculative check of a head's signature (verifyHead.spec).
const (
	specNone    uint8 = iota // not checked ahead
	specValid                // the signature verifies under the key in force at the head's place
	specInvalid              // it does not
)

// specTuning sets when heads are checked ahead. A head that has stayed
// its subject's head for lag messages is taken to be final; the judge
// looks at them each time `every` more messages have come; batch heads are checked together (as
// checkHeads does). sync (tests only) waits, at each look, for the
// verdicts of the batches sent at the one before, where the judge would
// take in only those that came back: which heads were checked ahead then
// does not depend on timing, and a head moved in between gets no verdict.
var specTuning = struct {
	lag, every uint64
	batch      int
	sync       bool
}{lag: 1 << 14, every: 4096, batch: headBatch}

// speculator checks the signatures of subjects' heads during the first
// read instead of after it. Only the newest event of each subject needs
// its signature checked (see Reader.Verify), and which one that is is
// known only at the end of the stream; checked there, the 250k heads of
// the bench's 1.25M events took about a seventh of verify's time, on both
// cores, after a read that left part of a core idle. So a head that has
// not moved for a while is checked ahead, on a goroutine of its own, in
// batches, and its verdict is kept on the head with the head's sequence:
// if the subject moves on, the new head replaces it (verdict and all),
// and a verdict arriving for an earlier head is dropped. checkHeads then
// checks only the heads without a verdict, so every subject's final head
// is judged once, on its own signature, whichever way; the report is the
// one checkHeads alone gives. A check of a head that moves afterwards is
// wasted, never wrong: at most one per subject seen (budget), so a stream
// whose heads keep moving costs at most twice the signatures.
//
// Everything but the checks runs on the judge's goroutine (unchecked,
// tick, finish), which alone writes heads. Memory: the candidates of the
// last lag+every messages and at most four batches.
type speculator struct {
	heads *verifyHeads
	chain *domain.KeyChain // the judge's: heads name keys by index in its Order
	sigs  *atomic.Uint64   // signatures checked, counted

	queue []specCandidate // heads left unchecked, in stream order
	front int             // queue[front:] are yet to be looked at

	next     *specJob
	jobs     chan *specJob // to the checker; never more than 2 in flight
	done     chan *specJob // judged, back to the judge
	free     []*specJob    // judged and taken in, to be filled again
	inflight int
	checked  int // heads sent ahead so far
	wg       sync.WaitGroup
}

// specCandidate is a head left unchecked: its index in verifyHeads and
// the sequence it was stored at.
type specCandidate struct {
	index int
	seq   uint64
}

type specJob struct {
	refs  []specCandidate
	heads []headSig
	ok    []bool
}

// newSpeculator starts the checker; finish stops it.
func newSpeculator(heads *verifyHeads, chain *domain.KeyChain, sigs *atomic.Uint64) *speculator {
	s := &speculator{heads: heads, chain: chain, sigs: sigs,
		jobs: make(chan *specJob, 2), done: make(chan *specJob, 2)}
	s.next = s.newJob()
	heads.spec = s
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for j := range s.jobs {
			j.ok = verifyHeadSigs(j.heads)
			s.sigs.Add(uint64(len(j.heads)))
			s.done <- j
		}
	}()
	return s
}

// unchecked: the head of index was left unchecked at seq.
func (s *speculator) unchecked(index int, seq uint64) {
	s.queue = append(s.queue, specCandidate{index, seq})
}

// tick, at seq in the stream: takes in the verdicts that came back, and
// sends ahead the heads that have not moved for specTuning.lag messages.
// A candidate that cannot go (the batches in flight, the budget) is left
// for checkHeads.
func (s *speculator) tick(seq uint64) {
	s.collect(specTuning.sync)
	for s.front < len(s.queue) && s.queue[s.front].seq+specTuning.lag <= seq {
		c := s.queue[s.front]
		s.front++
		h := s.heads.at(c.index)
		if h.seq != c.seq || !h.unchecked || h.spec != specNone || s.checked >= s.heads.len() {
			continue // moved on since, or over budget
		}
		if len(s.next.heads) == specTuning.batch && !s.send() {
			continue
		}
		s.next.refs = append(s.next.refs, c)
		s.next.heads = append(s.next.heads, headSig{hash: h.hash, sig: h.sig, key: s.chain.Order[h.key]})
		s.checked++
	}
	if len(s.next.heads) == specTuning.batch {
		s.send()
	}
	if s.front > len(s.queue)/2 {
		s.queue = s.queue[:copy(s.queue, s.queue[s.front:])]
		s.front = 0
	}
}

// send sends the next batch to the checker if fewer than two are in
// flight.
func (s *speculator) send() bool {
	if s.inflight >= 2 {
		return false
	}
	s.jobs <- s.next
	s.inflight++
	s.next = s.newJob()
	return true
}

// newJob is an empty batch, one taken in before if there is one.
func (s *speculator) newJob() *specJob {
	if n := len(s.free); n > 0 {
		j := s.free[n-1]
		s.free = s.free[:n-1]
		j.refs, j.heads, j.ok = j.refs[:0], j.heads[:0], nil
		return j
	}
	return &specJob{refs: make([]specCandidate, 0, specTuning.batch), heads: make([]headSig, 0, specTuning.batch)}
}

// collect applies the verdicts that came back (all in flight, if wait) to
// the heads they were given on, if those are still their subjects' heads.
func (s *speculator) collect(wait bool) {
	for s.inflight > 0 {
		var j *specJob
		if wait {
			j = <-s.done
		} else {
			select {
			case j = <-s.done:
			default:
				return
			}
		}
		s.inflight--
		for i, c := range j.refs {
			if h := s.heads.at(c.index); h.seq == c.seq && h.unchecked && h.spec == specNone {
				h.spec = specInvalid
				if j.ok[i] {
					h.spec = specValid
				}
			}
		}
		s.free = append(s.free, j)
	}
}

// finish stops the checker once the read is over: the batches it has not
// started and the one being filled are left to checkHeads (on every core),
// the one it is checking is waited for.
func (s *speculator) finish() {
	for unstarted := true; unstarted; {
		select {
		case <-s.jobs:
			s.inflight--
		default:
			unstarted = false
		}
	}
	close(s.jobs)
	s.collect(true)
	s.wg.Wait()
	s.heads.spec = nil
	s.queue, s.next, s.free = nil, nil, nil
}
