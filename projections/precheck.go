package projections

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// Checking a message is partly a matter of the message alone and partly a
// matter of its place in the log. Decoding it, checking its hash (see check)
// and checking its MAC under the key it names (its kid) depend on nothing
// but its bytes and the keys this instance holds, so a batch of more than a
// few messages does them ahead, on every core, while ApplyBatch goes through
// the messages in stream order. Everything that depends on the order stays
// there, sequential and unchanged: the gap check, whether the kid is the key
// in force at that point of the log (domain.KeyChain.Authenticate, which key
// events change), the link to the subject's last authentic head
// (domain.JudgeHashed), the fold, the rejection records and the checkpoint.
// A MAC checked ahead is only an answer to "does the MAC match under the key
// this event names"; it counts only when Authenticate, in order, asks that
// very question.

const (
	// parallelMin is the number of messages to check below which a batch
	// checks them inline, as it goes: a live message (one per batch) does
	// not pay for a pool.
	parallelMin = 8
	// checkChunk is how many messages a worker checks at a time, and so
	// how far ApplyBatch may have to wait before it can start.
	checkChunk = 32
)

// checkWorkers is how many goroutines check a large batch ahead.
var checkWorkers = func() int { return runtime.GOMAXPROCS(0) }

// pipelinesStarted counts batches that were checked ahead (for tests).
var pipelinesStarted atomic.Uint64

// checked is what the order-independent checks of one message found.
type checked struct {
	e       domain.Event
	decErr  error // domain.DecodeEvent's error
	hashErr error // e.CheckHash()'s, if it decoded (see check)
	// macErr is p.keys.VerifyNamed(e)'s, if macDone: asked for an event
	// that decoded, matches its hash and carries a kid, a MAC and a
	// signature.
	macErr  error
	macDone bool
	// session is domain.SessionFromEvent's answer for a session_started
	// that matches its hash: decoding the payload needs no order either,
	// and the fold of a session_started is most of a rebuild.
	session    *domain.Session
	sessionErr error
}

// check decodes data, checks its hash and, if it carries a kid, a MAC and
// a signature, the MAC under the key it names (whether that key is in
// force is for Authenticate to say, in order).
//
// The hash is checked on the stored bytes (domain.StoredHashMatches: one
// SHA-256, no re-encoding) when the MAC matches under the key the event
// names, and with CheckHash (re-encode, then hash) otherwise. The two
// answer alike for such an event: an HMAC under a key held here is made
// only by Seal, over the event's hash, which Seal computed from the
// canonical bytes (CanonicalBytes) of the event it signed, key id
// included (the MAC's message is domain-separated, so no other use of
// the key can produce it). If the stored bytes without the
// authenticators hash to that hash, they are those canonical bytes
// (SHA-256 second preimages aside, which the chains rest on anyway), so
// they decode to the event that was signed, and re-encoding it gives the
// same canonical bytes again: CheckHash would pass. In every other case
// (stored bytes in another layout, a hash of their own, a MAC that does
// not match, a key not held here) CheckHash decides, and the MAC is
// asked only if the hash matches, as before: verdicts and rejection
// reasons are exactly the ones CheckHash alone gives. Without the MAC,
// StoredHashMatches would not do: anyone can hash a non-canonical
// encoding of their own (precheck_test.go's trustMix stores two).
func (p *Projection) check(data []byte) checked {
	var c checked
	if c.e, c.decErr = domain.DecodeEvent(data); c.decErr != nil {
		return c
	}
	mac := c.e.KeyID != "" && c.e.MAC != "" && c.e.Sig != ""
	var macErr error
	asked := false
	if mac && c.e.StoredHashMatches(data) {
		if macErr, asked = p.keys.VerifyNamed(c.e), true; macErr == nil {
			c.macDone = true
			c.decodeSession()
			return c
		}
	}
	if c.hashErr = c.e.CheckHash(); c.hashErr != nil {
		return c // the MAC is not asked about an event that fails its hash
	}
	if mac {
		if !asked { // an answer above stands: it depends on the kid, MAC and hash only
			macErr = p.keys.VerifyNamed(c.e)
		}
		c.macErr, c.macDone = macErr, true
	}
	c.decodeSession()
	return c
}

func (c *checked) decodeSession() {
	if c.e.Type == domain.EventSessionStarted {
		c.session, c.sessionErr = domain.SessionFromEvent(c.e)
	}
}

// sessionStarted is domain.SessionFromEvent(e), decoded ahead with the
// checks of the message being applied if that is e.
func (p *Projection) sessionStarted(e domain.Event) (*domain.Session, error) {
	if c := p.current; c != nil && c.e.ID == e.ID && c.e.Hash == e.Hash && (c.session != nil || c.sessionErr != nil) {
		return c.session, c.sessionErr
	}
	return domain.SessionFromEvent(e)
}

// precheckedVerifier is the Verifier Authenticate gets for one message: if
// it asks for the MAC check done ahead (the same event, under the key the
// event names), the answer is that check's; any other question goes to the
// keyring. Keyring.Verify depends only on the key id, the MAC and the hash,
// so the two answers are the same.
type precheckedVerifier struct {
	keys *domain.Keyring
	c    *checked
}

func (v precheckedVerifier) Verify(e domain.Event, key domain.PublicKey) error {
	if v.c.macDone && key.ID == v.c.e.KeyID && e.KeyID == v.c.e.KeyID && e.Hash == v.c.e.Hash && e.MAC == v.c.e.MAC {
		return v.c.macErr
	}
	return v.keys.Verify(e, key)
}

// checkPipeline checks a batch's messages ahead, in chunks taken in stream
// order by a pool of workers; the applier takes the results in stream
// order, waiting for a chunk only if it is not done yet.
type checkPipeline struct {
	recs  []eventstore.Record
	out   []checked
	ready []chan struct{} // closed when its chunk of out is done
	next  atomic.Int64    // the next chunk to take
	stop  atomic.Bool     // the applier needs no more
	wg    sync.WaitGroup
}

// startChecks starts checking recs ahead, or returns nil if there are too
// few of them (or one core) to be worth it: then the applier checks each
// message as it goes. buf is reused storage for the results.
func (p *Projection) startChecks(recs []eventstore.Record, buf []checked) *checkPipeline {
	workers := checkWorkers()
	if len(recs) < parallelMin || workers < 2 {
		return nil
	}
	pipelinesStarted.Add(1)
	if cap(buf) < len(recs) {
		buf = make([]checked, len(recs))
	}
	c := &checkPipeline{recs: recs, out: buf[:len(recs)]}
	chunks := (len(recs) + checkChunk - 1) / checkChunk
	c.ready = make([]chan struct{}, chunks)
	for i := range c.ready {
		c.ready[i] = make(chan struct{})
	}
	workers = min(workers, chunks)
	c.wg.Add(workers)
	for range workers {
		go func() {
			defer c.wg.Done()
			for !c.stop.Load() {
				k := int(c.next.Add(1) - 1)
				if k >= chunks {
					return
				}
				hi := min((k+1)*checkChunk, len(recs))
				for i := k * checkChunk; i < hi; i++ {
					c.out[i] = p.check(recs[i].Data)
				}
				close(c.ready[k])
			}
		}()
	}
	return c
}

// get is the checks of recs[i], once they are done.
func (c *checkPipeline) get(i int) *checked {
	<-c.ready[i/checkChunk]
	return &c.out[i]
}

// close stops the workers, waits for them (they read the caller's
// records), and hands back the results' storage, cleared, for reuse.
func (c *checkPipeline) close() []checked {
	c.stop.Store(true)
	c.wg.Wait()
	clear(c.out)
	return c.out[:0]
}
