package eventstore_test

import (
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/sessionledger/ledger/eventstore"
)

// TestStreamDigestIsItsDefinition: D(n) = SHA-256(D(n-1) || seq || subject
// || 0 || SHA-256(data)), whatever way it is computed: digests pinned
// outside the system must keep matching.
func TestStreamDigestIsItsDefinition(t *testing.T) {
	var d eventstore.StreamDigest
	for i, subject := range []string{"", "ledger.user.u1", strings.Repeat("s", 300)} {
		r := eventstore.Record{Seq: uint64(i+1) * 0x0102030405, Subject: subject, Data: []byte(strings.Repeat("x", i*100))}
		h := sha256.New()
		h.Write(d[:])
		h.Write(binary.BigEndian.AppendUint64(nil, r.Seq))
		h.Write([]byte(subject))
		h.Write([]byte{0})
		body := sha256.Sum256(r.Data)
		h.Write(body[:])
		var want eventstore.StreamDigest
		h.Sum(want[:0])
		if d = d.Next(r); d != want {
			t.Fatalf("message %d: digest %s, want %s", i, d, want)
		}
	}
}
