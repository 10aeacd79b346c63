package projections

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// prefixMeta holds per-instance bookkeeping (the checkpoint, "mapplied"),
// which the digest leaves out.
const prefixMeta = 'm'

// Digest is a deterministic fingerprint of the projection's state: SHA-256
// over every key and value in key order, each length-prefixed, read from
// one consistent snapshot. Keys under the 'm' (metadata) prefix are left
// out, as they describe the instance rather than the ledger. Two
// projections that applied the same stream prefix have the same digest,
// whichever way they got there (live, catch-up, rebuild, another instance),
// so compare digests of projections at the same Applied() sequence; use
// DigestAt to get both from one snapshot.
func (p *Projection) Digest() (string, error) {
	d, _, err := p.DigestAt()
	return d, err
}

// DigestAt is Digest together with the applied sequence of the snapshot it
// was computed from.
func (p *Projection) DigestAt() (digest string, applied uint64, err error) {
	snap := p.db.NewSnapshot()
	defer snap.Close()
	if v, closer, err := snap.Get(keyApplied); err == nil {
		applied, err = decodeUint64(v)
		closer.Close()
		if err != nil {
			return "", 0, fmt.Errorf("digest: checkpoint: %w", err)
		}
	}
	it, err := snap.NewIter(&pebble.IterOptions{})
	if err != nil {
		return "", 0, fmt.Errorf("digest: %w", err)
	}
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) > 0 && k[0] == prefixMeta {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return "", 0, fmt.Errorf("digest: read %q: %w", k, err)
		}
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(k)))])
		h.Write(k)
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(v)))])
		h.Write(v)
	}
	if err := it.Close(); err != nil {
		return "", 0, fmt.Errorf("digest: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), applied, nil
}
