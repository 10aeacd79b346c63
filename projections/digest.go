package projections

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/sessionledger/ledger/eventstore"
)

// Digest is DigestAt without the sequence.
func (p *Projection) Digest() (string, error) {
	d, _, err := p.DigestAt()
	return d, err
}

// DigestAt is SHA-256 over every key and value of the projection, in key
// order, and the applied sequence it covers, from one consistent snapshot.
// The projection is a pure function of the stream prefix it has applied, so
// two projections at the same applied sequence, built live, caught up or
// rebuilt, on any instance, have the same digest.
func (p *Projection) DigestAt() (digest string, applied uint64, err error) {
	p.applyMu.Lock() // a consistent point between batches
	snap := p.db.NewSnapshot()
	applied = p.Applied()
	p.applyMu.Unlock()
	defer snap.Close()
	it, err := snap.NewIter(nil)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	var n [4]byte
	for ok := it.First(); ok; ok = it.Next() {
		if bytes.Equal(it.Key(), keyStream) {
			continue // when this instance first saw the stream: not state
		}
		for _, b := range [][]byte{it.Key(), it.Value()} {
			binary.BigEndian.PutUint32(n[:], uint32(len(b)))
			h.Write(n[:])
			h.Write(b)
		}
	}
	if err := it.Close(); err != nil {
		return "", 0, fmt.Errorf("projection digest: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), applied, nil
}

// StreamDigest is the running digest of the stream up to the applied
// sequence, as the projection computed it while applying.
func (p *Projection) StreamDigest() (eventstore.StreamDigest, uint64) {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	return p.digest, p.Applied()
}

// DigestCheckpoints lists the stream digests recorded every
// eventstore.DigestEvery sequences, oldest first.
func (p *Projection) DigestCheckpoints() ([]eventstore.Checkpoint, error) {
	lower := []byte{prefixDigest}
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, err
	}
	var out []eventstore.Checkpoint
	for ok := it.First(); ok; ok = it.Next() {
		var c eventstore.Checkpoint
		c.Seq = binary.BigEndian.Uint64(it.Key()[1:])
		copy(c.Digest[:], it.Value())
		out = append(out, c)
	}
	return out, it.Close()
}

// Rejected lists the newest stream messages the projection did not apply
// (at most limit, all if limit <= 0), oldest first, and how many there are
// in all.
func (p *Projection) Rejected(limit int) ([]Rejected, uint64, error) {
	total, err := p.rejectedTotal(p.db)
	if err != nil {
		return nil, 0, err
	}
	lower := []byte{prefixRejected}
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, 0, err
	}
	var out []Rejected
	for ok := it.Last(); ok && (limit <= 0 || len(out) < limit); ok = it.Prev() {
		var r Rejected
		if err := json.Unmarshal(it.Value(), &r); err != nil {
			r = Rejected{Seq: binary.BigEndian.Uint64(it.Key()[1:]), Reason: RejectDecode, Detail: "unreadable record: " + err.Error()}
		}
		out = append(out, r)
	}
	slices.Reverse(out)
	return out, total, it.Close()
}

func (p *Projection) rejectedTotal(r reader) (uint64, error) {
	v, closer, err := r.Get(keyRejected)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	return decodeUint64(v)
}
