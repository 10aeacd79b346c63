package eventstore_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// TestVerifyReadsEveryMessageOnceInOrder: over a stream of several pull
// batches (the read asks for 4096 messages at a time), both of Verify's
// reads see every message once and in order (the stream digest, which
// covers each message's place, is the one computed from the records), and
// a forgery near the start and one near the end are each reported at
// their place.
func TestVerifyReadsEveryMessageOnceInOrder(t *testing.T) {
	nc := startNATS(t, t.TempDir())
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	k1, _ := domain.NewSigningKey(bytes.Repeat([]byte{1}, 32))
	forger, _ := domain.NewSigningKey(bytes.Repeat([]byte{7}, 32))
	const prefix, n = "r.", 10000
	l := newLedgerLog(t, prefix, k1)
	var forged []uint64
	for i := range n {
		subject := eventstore.UserSubject(fmt.Sprint("u", i%300))
		if i == 20 || i == n-30 {
			f, _ := l.forge(subject, l.heads[subject], k1.ID(), forger)
			forged = append(forged, f)
		}
		l.append(subject, use("u", "s", i), k1)
	}
	l.pin()
	rep := l.verify(ctx, js, "R", k1.Public())
	if rep.Messages != uint64(len(l.recs)) || rep.LastSeq != uint64(len(l.recs)) {
		t.Fatalf("%d messages up to %d, want %d", rep.Messages, rep.LastSeq, len(l.recs))
	}
	var got []string
	for _, p := range rep.Problems {
		got = append(got, fmt.Sprintf("%d %s", p.Seq, p.Kind))
	}
	want := []string{fmt.Sprintf("%d %s", forged[0], eventstore.ProblemSignature), fmt.Sprintf("%d %s", forged[1], eventstore.ProblemSignature)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("problems %v, want %v (a pin mismatch means a message was missed, repeated or out of order)", got, want)
	}
}
