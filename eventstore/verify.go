package eventstore

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

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
	Subjects int    `json:"subjects"`
	Uses     uint64 `json:"uses"`
	// Signatures is how many Ed25519 signatures were checked: each
	// subject's newest event, key events and uses, and every event of a
	// subject where something was found (see Verify), plus the heads
	// checked during the read that a later event then replaced (at most
	// one per subject; how many depends on timing, so two runs over the
	// same stream may count differently).
	Signatures  uint64       `json:"signatures"`
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
	// Workers decode and check events and signatures in parallel
	// (default: the number of CPUs).
	Workers int
}

// Verify re-reads every message of a stream and checks each event the way
// an instance does before applying it: its hash matches its content, it
// links to the hash of the subject's previous authentic event, and it is
// authenticated by the ledger's key in force at its place in the log (with
// the Ed25519 signature, so the public keys suffice). An event that fails
// does not become its subject's head, so the events after it are judged
// against what the ledger really wrote. Verify also checks that stream
// sequences are contiguous and that pinned stream digests still match.
// Use subjects (UseSubject) hold no chain: each of their events is checked
// on its own (hash, no predecessor, a use of the subject's user, signature;
// see domain.JudgeUse), so dropping a use there is not detected by Verify,
// only by a pinned digest; a lost use can only end a session sooner.
// Problems are listed in stream order.
//
// Signatures through the chains. An Ed25519 verification costs about ten
// times the decoding and hashing of an event, so one per event capped
// Verify near 30k events/s on 2 cores. Each event's hash covers its
// predecessor's hash and its key id, and a writer only ever seals an event
// onto the head its verifier (the projection, which authenticates every
// event before it moves a head; see VersionSource) judged authentic: a
// valid signature on an event therefore vouches for every event its chain
// reaches back to, each authentic at its place when it was linked to, like
// a signed commit for its history. So the first read checks, for every
// chained event, its hash, its link, that it names the key in force at its
// place and that its signature is well formed (base64url of 64 bytes), and
// checks Ed25519 signatures only for each subject's newest authentic event
// (under the key in force at that event's place, in batches:
// verifyHeadSigs; a head that stays put long enough is checked during the
// read, and checked again if it moves after all: speculator), for key
// events (they move the key chain) and for uses (they stand alone). A forged event (one no key holder signed)
// is then either its subject's newest, whose signature fails, or followed
// by an event that does not link to it, since no key holder links to one:
// either way its subject shows a problem. Every subject where the first
// read finds anything (a problem of its own, or a newest event whose
// signature fails) is judged again in a second read, up to the same
// sequence, with every event's signature checked at its place, as if none
// were vouched for: the problems reported are the ones an event-by-event
// check reports, on the same events. A clean stream is read once.
//
// What a clean report claims, then: every event's content, key id and
// place are authentic (as above), and every subject's newest event, key
// event and use carries a valid signature. What it does not claim: that
// the signature bytes of an event before its subject's newest verify on
// their own (the hash covers neither Sig nor MAC; an event whose Sig was
// swapped for another well-formed one is vouched for, not reported); a
// pinned stream digest covers those bytes as it covers every byte. The
// argument rests on SHA-256 (which the chains already rely on), on the
// ledger's keys (as any signature does) and on every holder of a key in
// force writing only through Store, which links to authenticated heads
// only. For the same reason an event whose signature is left to a later
// one is decoded and hashed as stored (domain.DecodeVouched and
// StoredHasher: no re-encoding, no check that the payload is JSON, which
// every byte string Encode writes is): the later signature vouches for
// those bytes, and bytes no writer stored are vouched for by no signature,
// so their subject shows a problem as above and is judged again, exactly.
// Wherever no signature vouches for an event, in the second read and for
// key events and uses, Verify runs the exact DecodeEvent and CheckHash.
//
// Memory is bounded by the number of subjects (the last authentic hash of
// each and, until the end of the first pass, its signature), not by the
// number of events: no hash is kept once its subject has moved on. Telling
// a broken link apart as missing or reordered needs to know whether the
// hash it names was an authentic event earlier in the stream; a clean
// stream never asks, and a stream with broken links is read once more to
// answer for those links only (memory bounded by the number of problems).
func (s *Reader) Verify(ctx context.Context, o VerifyOptions) (VerifyReport, error) {
	rep, heads, err := s.verifyPass(ctx, o, nil, 0)
	if err != nil {
		return rep, err
	}
	suspects := map[string]bool{}
	for _, p := range rep.Problems {
		if p.Kind != ProblemGap && p.Kind != ProblemPin {
			suspects[p.Subject] = true
		}
	}
	signatures := rep.Signatures
	for _, subject := range checkHeads(heads.all(), rep.Keys, o.Workers, &signatures) {
		suspects[subject] = true
	}
	heads = nil // for the collector, during a second read
	if len(suspects) > 0 {
		last := rep.LastSeq
		if rep, _, err = s.verifyPass(ctx, o, suspects, last); err != nil {
			return rep, err
		}
		signatures += rep.Signatures
	}
	rep.Signatures = signatures
	return rep, s.finishReport(ctx, o, &rep)
}

// verifyPass reads the stream (up to last, if not 0) and judges every
// message. The signatures of chained events on subjects not in each are
// left to their subject's head (see Verify): heads lists, for the caller
// to check, the newest authentic event of each subject whose signature was
// not checked. Broken links are reported as missing when each is nil (a
// second pass will refine them) and refined when it is not.
func (s *Reader) verifyPass(ctx context.Context, o VerifyOptions, each map[string]bool, last uint64) (VerifyReport, *verifyHeads, error) {
	var rep VerifyReport
	heads := newVerifyHeads() // subject -> its last authentic event
	// Broken links: the prev hash they name -> problem indexes. pending are
	// unresolved so far; every broken link is also in links, for the
	// second read.
	pending := map[string][]int{}
	links := map[string][]int{}
	var chain domain.KeyChain
	var digest StreamDigest
	var prevSeq uint64
	problem := func(r Record, e domain.Event, kind, detail string) {
		rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Subject: r.Subject, EventID: e.ID, Kind: kind, Detail: detail})
	}
	var sigs atomic.Uint64
	// The first read checks heads that look final ahead (speculator); a
	// second one checks every signature of its subjects at its place.
	var spec *speculator
	if each == nil {
		spec = newSpeculator(heads, &chain, &sigs)
	}
	check := func(it *verifyItem) bool {
		r, e := it.rec, it.event
		if last > 0 && r.Seq > last {
			return false
		}
		rep.Messages++
		if spec != nil && rep.Messages%specTuning.every == 0 {
			spec.tick(r.Seq)
		}
		if r.Seq != prevSeq+1 {
			rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Subject: r.Subject, Kind: ProblemGap,
				Detail: fmt.Sprintf("sequences %d to %d are absent", prevSeq+1, r.Seq-1)})
		}
		prevSeq = r.Seq
		digest = digest.next(r.Seq, r.Subject, it.body)
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
	err := verifyPipeline(ctx, s.stream, o.Workers, deferUnless(each), &sigs, check)
	if spec != nil {
		spec.finish()
	}
	rep.Signatures = sigs.Load()
	if err != nil {
		return rep, nil, err
	}
	rep.Subjects = heads.len()
	rep.LastSeq = prevSeq
	rep.Digest = digest
	rep.Keys = chain.Order
	rep.Anchored = chain.Anchored(o.Trusted)
	if len(links) > 0 && each != nil {
		if err := s.linksToEarlier(ctx, o.Workers, each, links, rep.Problems); err != nil {
			return rep, nil, err
		}
	}
	return rep, heads, nil
}

// finishReport adds what concerns the whole stream rather than an event,
// and sorts the problems.
func (s *Reader) finishReport(ctx context.Context, o VerifyOptions, rep *VerifyReport) error {
	if len(o.Trusted) > 0 && !rep.Anchored {
		detail := "the log introduces no signing key"
		if len(rep.Keys) > 0 {
			detail = fmt.Sprintf("none of the log's signing keys (%s) is among the trusted public keys", keyIDs(rep.Keys))
		}
		rep.Problems = append(rep.Problems, Problem{Seq: 1, Subject: KeysSubject, Kind: ProblemSignature, Detail: detail})
	}
	for seq := range o.Pins {
		if seq > rep.LastSeq {
			rep.Problems = append(rep.Problems, Problem{Seq: seq, Kind: ProblemPin, Detail: "pinned sequence is beyond the end of the stream"})
		}
	}
	sort.SliceStable(rep.Problems, func(i, j int) bool { return rep.Problems[i].Seq < rep.Problems[j].Seq })
	return ctx.Err()
}

// verifyHead is a subject's newest authentic event so far, if set: its
// hash (the SHA-256 of "sha256:<hex>"). If unchecked, its signature was
// left for the end of the pass: sig under the key of index key in the key
// chain's order. Raw bytes and an index rather than strings and a key: one
// per subject is most of what Verify keeps.
type verifyHead struct {
	hash      [sha256.Size]byte
	set       bool
	unchecked bool
	key       uint16
	// spec is the verdict of a speculative check of this head's signature
	// (speculator), specNone if there is none yet; seq is where the head
	// was stored, which tells a verdict on an earlier head apart.
	spec uint8
	seq  uint64
	sig  [ed25519.SignatureSize]byte
}

// verifyHeads is every subject's verifyHead: an index by subject into
// pages of heads, so that judging an event on a known subject is one map
// access, and the heads (no pointers in them) are nothing for the
// collector to scan. Nor is the index, for subjects shorter than a
// subjectKey (every subject the ledger writes, the 77-byte email subjects
// the longest; TestVerifyHeadsIndexHoldsTheLedgersSubjects): keyed by the subject's
// bytes rather than a string, it holds no pointer, and keeps none of the
// messages' subject strings alive, which the collector marked on every
// cycle of the read (a cycle every 100-200 ms at 1M subjects).
type verifyHeads struct {
	index map[subjectKey]int32
	long  map[string]int32 // subjects too long for a subjectKey
	pages [][]verifyHead
	n     int
	// spec, if set, is told of every head left unchecked (judgeVerifyItem).
	spec *speculator
}

// subjectKey is a subject of fewer bytes than it holds, zero-padded, its
// length in the last byte. 80 bytes: an email subject is
// "ledger.email." and a SHA-256 in hex (77 bytes); at 64 about half of a
// ledger's subjects (one email per user) fell to the string-keyed map.
type subjectKey [80]byte

const headsPage = 4096

func newVerifyHeads() *verifyHeads {
	return &verifyHeads{index: map[subjectKey]int32{}, long: map[string]int32{}}
}

// slot is subject's head, a zero one the first time, and its index: a
// pointer that stays valid (pages never move).
func (h *verifyHeads) slot(subject string) (int, *verifyHead) {
	var key subjectKey
	short := len(subject) < len(key)
	var i int32
	var ok bool
	if short {
		copy(key[:], subject)
		key[len(key)-1] = byte(len(subject))
		i, ok = h.index[key]
	} else {
		i, ok = h.long[subject]
	}
	if !ok {
		i = int32(h.n)
		if short {
			h.index[key] = i
		} else {
			h.long[subject] = i
		}
		if h.n%headsPage == 0 {
			h.pages = append(h.pages, make([]verifyHead, headsPage))
		}
		h.n++
	}
	return int(i), h.at(int(i))
}

// at is the head of index i.
func (h *verifyHeads) at(i int) *verifyHead { return &h.pages[i/headsPage][i%headsPage] }

func (h *verifyHeads) len() int { return h.n }

// all yields each subject and its head.
func (h *verifyHeads) all() iter.Seq2[string, verifyHead] {
	return func(yield func(string, verifyHead) bool) {
		for key, i := range h.index {
			if !yield(string(key[:key[len(key)-1]]), *h.at(int(i))) {
				return
			}
		}
		for subject, i := range h.long {
			if !yield(subject, *h.at(int(i))) {
				return
			}
		}
	}
}

// links reports whether it's event links to h: to nothing if h is not
// set, else to "sha256:<lowercase hex>" of h's hash, the one spelling an
// exact check's string comparison accepts.
func (h *verifyHead) links(it *verifyItem) bool {
	if !h.set {
		return it.event.PrevHash == ""
	}
	return it.prevOK && it.prev == h.hash
}

// decodeHash reads "sha256:<lowercase hex>", the form ComputeHash writes,
// into dst without a copy of the text; any other spelling fails.
func decodeHash(dst []byte, s string) bool {
	const label = "sha256:"
	if len(s) != len(label)+2*len(dst) || s[:len(label)] != label {
		return false
	}
	s = s[len(label):]
	bad := byte(0)
	for i := range dst {
		hi, lo := lowerHex[s[2*i]], lowerHex[s[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0x0f
	}
	return bad&0xf0 == 0
}

// lowerHex is the value of each lowercase hex digit, 0xff for any other
// byte.
var lowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()

// hashString is the head's hash as events write it.
func (h *verifyHead) hashString() string { return "sha256:" + hex.EncodeToString(h.hash[:]) }

// headBatch is how many heads' signatures are checked together. Past 190
// points (a batch of about 190 signatures under one key, see batchHolds)
// curve25519-voi multiplies with Pippenger's method, which gets cheaper a
// point as the batch grows: on the bench machine about 7.9 µs a signature
// in batches of 512, 7.2 in 1024, 6.9 in 2048 and no less in 4096 or 8192.
// A batch in flight is a few hundred KiB, whatever the stream.
const headBatch = 2048

// checkHeads checks the signature of every unchecked head on workers
// goroutines, in batches (verifyHeadSigs: the same verdicts as
// one by one), and returns the subjects whose head fails. A head whose
// signature a speculative check already judged (verifyHead.spec) keeps
// that verdict: it was given on this head, not an earlier one.
func checkHeads(heads iter.Seq2[string, verifyHead], keys []domain.PublicKey, workers int, signatures *uint64) []string {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	type job struct {
		subjects []string
		heads    []headSig
	}
	jobs := make(chan *job, workers)
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				for i, ok := range verifyHeadSigs(j.heads) {
					if !ok {
						mu.Lock()
						failed = append(failed, j.subjects[i])
						mu.Unlock()
					}
				}
			}
		}()
	}
	next := &job{}
	for subject, h := range heads {
		if !h.unchecked || h.spec == specValid {
			continue
		}
		if h.spec == specInvalid {
			mu.Lock()
			failed = append(failed, subject)
			mu.Unlock()
			continue
		}
		*signatures++
		next.subjects = append(next.subjects, subject)
		next.heads = append(next.heads, headSig{hash: h.hash, sig: h.sig, key: keys[h.key]})
		if len(next.heads) == headBatch {
			jobs <- next
			next = &job{}
		}
	}
	if len(next.heads) > 0 {
		jobs <- next
	}
	close(jobs)
	wg.Wait()
	return failed
}

// judgeVerifyItem is domain.Judge's order (hash, link, then signature),
// spelt out because the hashes were checked ahead of time on several cores
// and a broken link is reported as ProblemMissing for the caller to refine.
// An authentic event becomes its subject's head ("" returned); one whose
// signature was left to its subject's newest event (see Verify) becomes an
// unchecked head.
func judgeVerifyItem(it *verifyItem, heads *verifyHeads, chain *domain.KeyChain) (kind, detail string) {
	r, e := it.rec, it.event
	index, slot := heads.slot(r.Subject)
	head := *slot
	switch {
	case it.decodeErr != nil:
		return ProblemCorrupt, it.decodeErr.Error()
	case it.hashErr != nil:
		return ProblemAltered, "content does not match the event's hash"
	case !head.links(it):
		return ProblemMissing, "links to an event that is not in the stream before it"
	}
	// Last, because it folds key events into the chain.
	if err := chain.Authenticate(e, it); err != nil {
		return ProblemSignature, err.Error()
	}
	next := verifyHead{set: true, hash: it.hash, seq: r.Seq}
	if it.deferred != nil {
		next.unchecked, next.sig = true, it.sig
		next.key = uint16(slices.IndexFunc(chain.Order, func(k domain.PublicKey) bool { return k.Key.Equal(it.deferred) }))
	}
	*slot = next
	if next.unchecked && heads.spec != nil {
		heads.spec.unchecked(index, r.Seq)
	}
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

// linksToEarlier re-reads the stream, judging it as the pass did (each:
// the subjects whose every signature it checked), up to the last broken
// link, and marks as reordered each broken link whose hash was an authentic
// event before it: it links to an earlier event than its subject's previous
// one. links maps a hash to the problems naming it.
func (s *Reader) linksToEarlier(ctx context.Context, workers int, each map[string]bool, links map[string][]int, problems []Problem) error {
	var last uint64
	for _, idx := range links {
		for _, i := range idx {
			last = max(last, problems[i].Seq)
		}
	}
	heads := newVerifyHeads()
	var chain domain.KeyChain
	var sigs atomic.Uint64
	return verifyPipeline(ctx, s.stream, workers, deferUnless(each), &sigs, func(it *verifyItem) bool {
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

// deferral says which events may leave their signature to their
// subject's newest event: chained events (not uses, which stand alone, nor
// key events, which move the key chain) on subjects not in each. The
// subject is asked first, before the event is decoded.
type deferral struct{ each map[string]bool }

func deferUnless(each map[string]bool) deferral { return deferral{each} }

// subject: events on r's subject may defer.
func (d deferral) subject(r Record) bool {
	_, use := UseSubjectUser(r.Subject)
	return !use && r.Subject != KeysSubject && !d.each[r.Subject]
}

// event: e, on a subject that may, may defer.
func (d deferral) event(e domain.Event) bool {
	return e.Type != domain.EventSigningKeyIntroduced && e.Type != domain.EventSigningKeyRotated
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
	// mayDefer: the signature may be left to the subject's newest event,
	// if it is well formed (then sig holds it). deferred is the key in
	// force it was left under, once judged.
	mayDefer bool
	sig      [ed25519.SignatureSize]byte
	deferred ed25519.PublicKey
	sigs     *atomic.Uint64 // signatures checked, counted
	// body is SHA-256 of the message's data, for the stream digest.
	body [sha256.Size]byte
	// hash is the event's hash as bytes, once checked; prev its PrevHash
	// as bytes if prevOK (the form ComputeHash writes). The worker has
	// them, or decodes them, so that the in-order judge compares bytes.
	hash   [sha256.Size]byte
	prev   [sha256.Size]byte
	prevOK bool
}

// Verify makes a verifyItem a domain.Verifier for its own event.
func (it *verifyItem) Verify(e domain.Event, key domain.PublicKey) error {
	if it.mayDefer {
		it.deferred = key.Key // checked through the chain, see Reader.Verify
		return nil
	}
	if it.sigKey != nil && it.sigKey.Equal(key.Key) {
		return it.sigErr
	}
	it.sigs.Add(1)
	return domain.VerifySignature(e, key)
}

// verifyPipeline reads the stream, decodes events and checks their hashes
// and Ed25519 signatures on several cores (a signature costs about 60 µs
// on one), and hands the results to judge in stream order, until judge
// returns false. Keys are learnt from key events as workers decode them,
// unverified, as hints: judge only trusts a result for the key it finds in
// force, and checks anew an event whose key was not learnt in time. Events
// for which mayDefer says so get no signature check here, only one that it
// is well formed (see Reader.Verify). sigs counts the signatures checked.
// Memory is bounded by the channels' capacity and the keys, whatever the
// stream's length.
func verifyPipeline(ctx context.Context, stream jetstream.Stream, workers int, mayDefer deferral, sigs *atomic.Uint64, judge func(*verifyItem) bool) error {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Messages travel in chunks: a channel operation and a wake-up per
	// message cost as much as hashing one.
	const chunkSize = 64
	type chunk struct {
		items []verifyItem
		done  chan struct{}
	}
	work := make(chan *chunk, 16)
	ordered := make(chan *chunk, 64)
	// Judged chunks go back to the reader: a chunk is 64 items of about
	// 500 bytes each, not worth a fresh allocation (and a collection) every
	// 64 messages.
	free := make(chan *chunk, cap(ordered)+cap(work)+workers+2)
	newChunk := func() *chunk {
		select {
		case c := <-free:
			c.items, c.done = c.items[:0], make(chan struct{})
			return c
		default:
			return &chunk{items: make([]verifyItem, 0, chunkSize), done: make(chan struct{})}
		}
	}
	var known sync.Map // key id -> ed25519.PublicKey, from key events
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var hasher domain.StoredHasher
			for c := range work {
				for i := range c.items {
					c.items[i].check(mayDefer, &known, &hasher)
				}
				close(c.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(ordered)
		defer close(work)
		next := newChunk()
		send := func() error {
			for _, ch := range []chan *chunk{ordered, work} {
				select {
				case ch <- next:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			next = newChunk()
			return nil
		}
		err := consumeStream(ctx, stream, func(r Record) error {
			next.items = append(next.items, verifyItem{rec: r, sigs: sigs})
			if len(next.items) == chunkSize {
				return send()
			}
			return nil
		})
		if err == nil && len(next.items) > 0 {
			err = send()
		}
		readErr <- err
	}()
	stopped := false
	for c := range ordered {
		if stopped {
			continue // drain: the reader stops at the cancel
		}
		<-c.done
		for i := range c.items {
			if !judge(&c.items[i]) {
				stopped = true
				cancel()
				break
			}
		}
		select {
		case free <- c: // judge keeps no pointer into an item
		default:
		}
	}
	wg.Wait()
	err := <-readErr
	if stopped && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// check is what a worker does for one message, ahead of the log order.
func (it *verifyItem) check(mayDefer deferral, known *sync.Map, hasher *domain.StoredHasher) {
	// An event whose signature may be left to a later one is decoded and
	// hashed as stored (domain.DecodeVouched, StoredHasher): that
	// signature vouches for the bytes (see Reader.Verify). Anything else,
	// including every event these take for one a writer did not store,
	// goes the exact way below.
	//
	// The event's strings share the message's bytes rather than copy
	// them: the NATS client gives each message a buffer of its own, and
	// nothing writes to it.
	if mayDefer.subject(it.rec) {
		text := unsafe.String(unsafe.SliceData(it.rec.Data), len(it.rec.Data))
		if e, ok := domain.DecodeVouched(it.rec.Data, text); ok && mayDefer.event(e) {
			if matches, body, hash := hasher.SumHash(e, it.rec.Data); matches {
				// A malformed signature fails at its place, as it would
				// without deferring.
				if sig, wellFormed := domain.SignatureBytes(e); wellFormed {
					it.event, it.body, it.hash, it.sig, it.mayDefer = e, body, hash, sig, true
					it.prevOK = decodeHash(it.prev[:], e.PrevHash)
					return
				}
			}
		}
	}
	it.body = sha256.Sum256(it.rec.Data)
	it.event, it.decodeErr = domain.DecodeEvent(it.rec.Data)
	if it.decodeErr != nil {
		return
	}
	if k, ok := domain.KeyNamedBy(it.event); ok {
		known.Store(k.ID, k.Key)
	}
	// Nothing taken this way defers its signature: it is checked at its
	// place, as every event is in an event-by-event check.
	if it.hashErr = it.event.CheckHash(); it.hashErr != nil {
		return
	}
	if !decodeHash(it.hash[:], it.event.Hash) {
		// Unreachable: the hash checked, so it is one ComputeHash writes.
		it.hashErr = domain.ErrHashMismatch
		return
	}
	it.prevOK = decodeHash(it.prev[:], it.event.PrevHash)
	if k, ok := known.Load(it.event.KeyID); ok {
		it.sigKey = k.(ed25519.PublicKey)
		it.sigs.Add(1)
		it.sigErr = domain.VerifySignature(it.event, domain.PublicKey{ID: it.event.KeyID, Key: it.sigKey})
	}
}

// ErrTampered is returned by callers that treat any problem as failure.
var ErrTampered = errors.New("the ledger does not verify")
