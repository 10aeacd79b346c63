package eventstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// StreamDigest is a running hash over every message of the stream in order:
// D(n) = SHA-256(D(n-1) || seq || subject || 0 || SHA-256(data)). Unlike the
// per-subject event chains it also covers messages that are not readable
// events, and any two readers of the same stream compute the same D(n).
// Pinning (n, D(n)) outside the system lets an auditor later prove that
// nothing up to n was altered, removed or reordered, including the newest
// event of a subject, which no later event links to.
type StreamDigest [sha256.Size]byte

// Next folds one stored message into the digest.
func (d StreamDigest) Next(r Record) StreamDigest {
	return d.next(r.Seq, r.Subject, sha256.Sum256(r.Data))
}

// next is Next with the data's hash computed ahead (Verify does it on
// several cores).
func (d StreamDigest) next(seq uint64, subject string, body [sha256.Size]byte) StreamDigest {
	// One call on bytes gathered on the stack (for the subjects the ledger
	// writes): no hasher to allocate for every message.
	var buf [192]byte
	b := append(buf[:0], d[:]...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, subject...)
	b = append(b, 0)
	b = append(b, body[:]...)
	return sha256.Sum256(b)
}

func (d StreamDigest) String() string { return hex.EncodeToString(d[:]) }

// ParseStreamDigest reads the hex form back.
func ParseStreamDigest(s string) (StreamDigest, bool) {
	var d StreamDigest
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(d) {
		return d, false
	}
	copy(d[:], b)
	return d, true
}

// DigestEvery is how often (in stream sequences) a projection records the
// stream digest as a checkpoint an auditor can pin.
const DigestEvery = 1000
