package projections_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// TestAccessFolds: roles (kept in memory, and again after a reopen), keys
// looked up by hash until revoked, a role for a user who never registered
// and a second key with the same id rejected, an admin revocation folded
// into the session.
func TestAccessFolds(t *testing.T) {
	log, sids := history(t)
	by := domain.Principal{KeyID: domain.BootstrapKeyID}
	u := domain.NewUser("u1", "a@example.com", "hash", nil)
	roleEvent, _, _ := u.ChangeRole(domain.RoleAdmin, by, t0.Add(time.Hour))
	log.Add(t, eventstore.UserSubject("u1"), roleEvent)
	ghost, _, _ := domain.NewUser("ghost", "", "", nil).ChangeRole(domain.RoleAdmin, by, t0)
	ghostRec := log.Add(t, eventstore.UserSubject("ghost"), ghost)
	s, _ := domain.SessionFromEvent(mustDecode(t, log.Recs[2].Data)) // sids[0]'s start
	revoke, ok, err := domain.NewUser("u1", "", "", []*domain.Session{s}).RevokeByAdmin(sids[0], "desk", "", by, t0.Add(50*time.Hour))
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	log.Add(t, eventstore.UserSubject("u1"), revoke)

	raw, hash, _ := domain.NewServiceKey(bytes.NewReader(bytes.Repeat([]byte{3}, 32)))
	created, _ := domain.CreateServiceKey("k1", "ops", []domain.Scope{domain.ScopeAdmin}, hash, by, t0)
	keys := eventstore.RegistrySubject(domain.ServiceKeysRegistry)
	log.Add(t, keys, created)
	_, hash2, _ := domain.NewServiceKey(bytes.NewReader(bytes.Repeat([]byte{4}, 32)))
	dup, _ := domain.CreateServiceKey("k1", "again", []domain.Scope{domain.ScopeAudit}, hash2, by, t0)
	dupRec := log.Add(t, keys, dup)

	dir := t.TempDir()
	p := open(t, dir, log.Ring())
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	if p.Role("u1") != domain.RoleAdmin || p.Role("ghost") != domain.RoleUser || p.Role("nobody") != domain.RoleUser {
		t.Fatalf("roles: u1 %s, ghost %s", p.Role("u1"), p.Role("ghost"))
	}
	rejected, _, _ := p.Rejected(10)
	if len(rejected) != 2 || rejected[0].Seq != ghostRec.Seq || rejected[1].Seq != dupRec.Seq {
		t.Fatalf("rejected: %+v", rejected)
	}
	if got := mustSession(t, p, sids[0]).Verdict(t0.Add(51 * time.Hour)); got.Reason != domain.ReasonRevokedAdmin {
		t.Fatalf("session after the admin revocation: %+v", got)
	}
	c, ok, err := p.ActiveKey(domain.HashKey(raw))
	if err != nil || !ok || c.ID != "k1" || c.Name != "ops" {
		t.Fatalf("key lookup: %+v %v %v", c, ok, err)
	}
	if _, ok, _ := p.ActiveKey(hash2); ok {
		t.Fatal("the rejected duplicate's key is active")
	}
	revoked, _ := domain.RevokeServiceKey(c, by, t0.Add(time.Hour))
	if err := p.ApplyBatch([]eventstore.Record{log.Add(t, keys, revoked)}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := p.ActiveKey(domain.HashKey(raw)); ok {
		t.Fatal("a revoked key is still active")
	}
	list, err := p.ListCredentials(domain.KindServiceKey)
	if err != nil || len(list) != 1 || !list[0].Revoked() {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = open(t, dir, log.Ring())
	defer p.Close()
	if p.Role("u1") != domain.RoleAdmin {
		t.Fatal("the role is lost on reopen")
	}
	user, _, err := p.LoadUser("u1")
	if err != nil || user.Role() != domain.RoleAdmin {
		t.Fatalf("LoadUser role: %v", err)
	}
}

func mustDecode(t *testing.T, data []byte) domain.Event {
	t.Helper()
	e, err := domain.DecodeEvent(data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
