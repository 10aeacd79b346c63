package projections_test

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// TestAPIKeysFold: created keys are loaded with the user (for the cap and
// the exchange) and listed, a use moves the key's last use, a revocation
// takes the key out; only the key's hash is stored.
func TestAPIKeysFold(t *testing.T) {
	log, sids := history(t)
	subject := eventstore.UserSubject("u1")
	p := open(t, t.TempDir(), log.Ring())
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	u, _, err := p.LoadUser("u1")
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(49 * time.Hour) // the first session is live (used at +48h)
	var raws, ids []string
	for i := range 2 {
		raw, id, hash, err := domain.NewAPIKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		e, err := u.CreateAPIKey(sids[0], id, "key", hash, at.Add(time.Duration(i+1)*time.Hour), at.Add(time.Duration(i)*time.Second), domain.DefaultAPIKeyRules())
		if err != nil {
			t.Fatal(err)
		}
		log.Add(t, subject, e)
		raws, ids = append(raws, raw), append(ids, id)
	}
	log.Add(t, subject, domain.Event{Type: domain.EventAPIKeyUsed, UserID: "u1", Time: at.Add(time.Minute), SchemaVersion: domain.SchemaVersion,
		Payload: []byte(`{"key_id":"` + ids[0] + `"}`)})
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	u, _, err = p.LoadUser("u1")
	if err != nil || len(u.APIKeys()) != 2 {
		t.Fatalf("loaded %d keys: %v", len(u.APIKeys()), err)
	}
	keys, err := p.UserAPIKeys("u1")
	if err != nil || len(keys) != 2 || keys[0].ID != ids[1] || !keys[1].LastUsedAt.Equal(at.Add(time.Minute)) || !keys[1].ExpiresAt.Equal(at.Add(time.Hour)) {
		t.Fatalf("listed %+v %v", keys, err)
	}
	e, err := u.RevokeAPIKey(sids[0], ids[0], at.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	log.Add(t, subject, e)
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	if keys, _ := p.UserAPIKeys("u1"); len(keys) != 1 || keys[0].ID != ids[1] {
		t.Fatalf("after revoking %s: %+v", ids[0], keys)
	}
	if rej, n, _ := p.Rejected(10); n != 0 {
		t.Fatalf("rejected: %+v", rej)
	}
	for _, rec := range log.Recs {
		for _, raw := range raws {
			if bytes.Contains(rec.Data, []byte(raw[len("pak_")+32:])) {
				t.Fatal("a key's secret is in an event")
			}
		}
	}
}
