package projections

import (
	"testing"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// TestDigestDeterministic: the same records give the same digest however
// they are batched; different state gives a different one.
func TestDigestDeterministic(t *testing.T) {
	recs := []eventstore.Record{
		{Seq: 1, Subject: "ledger.user.u1", Data: []byte("not an event")},
		{Seq: 2, Subject: "ledger.user.u2", Data: []byte("{}")},
		{Seq: 3, Subject: "ledger.anon", Data: []byte("x")},
	}
	open := func() *Projection {
		p, err := Open(t.TempDir(), domain.NewKeyring(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	one, two, short := open(), open(), open()
	if err := one.ApplyBatch(recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := two.ApplyBatch([]eventstore.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if err := short.ApplyBatch(recs[:2]); err != nil {
		t.Fatal(err)
	}
	d1, at1, err := one.DigestAt()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := two.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d3, at3, err := short.DigestAt()
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 || at1 != 3 {
		t.Errorf("same records: %s at %d vs %s", d1, at1, d2)
	}
	if d3 == d1 || at3 != 2 {
		t.Errorf("a shorter prefix has the same digest %s (at %d)", d3, at3)
	}
}
