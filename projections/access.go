package projections

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// Roles, service keys and apps (see domain/access.go).

// loadRoles reads every non-default role into memory.
func loadRoles(db *pebble.DB) (map[string]domain.Role, error) {
	roles := map[string]domain.Role{}
	lower := []byte{prefixRole}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		roles[string(it.Key()[1:])] = domain.Role(it.Value())
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("read roles: %w", err)
	}
	return roles, nil
}

// foldRole keeps a user's role: a key only for a role other than the
// default, and the change for the in-memory map once the batch commits.
func (p *Projection) foldRole(b *pebble.Batch, e domain.Event) error {
	if _, closer, err := b.Get(userKey(e.UserID)); errors.Is(err, pebble.ErrNotFound) {
		return reject(RejectInvalid, fmt.Errorf("event %s: role of a user who never registered", e.ID))
	} else if err != nil {
		return err
	} else {
		closer.Close()
	}
	r, err := domain.ApplyRole(domain.RoleUser, e)
	if err != nil {
		return reject(RejectInvalid, err)
	}
	p.roleChanges[e.UserID] = r
	if r == domain.RoleUser {
		return b.Delete(roleKey(e.UserID), nil)
	}
	return b.Set(roleKey(e.UserID), []byte(r), nil)
}

func getRole(r reader, userID string) (domain.Role, error) {
	v, closer, err := r.Get(roleKey(userID))
	if errors.Is(err, pebble.ErrNotFound) {
		return domain.RoleUser, nil
	}
	if err != nil {
		return "", fmt.Errorf("role of %s: %w", userID, err)
	}
	defer closer.Close()
	return domain.Role(v), nil
}

// foldCredential keeps service keys and apps: the record by id, and the
// active ones by key hash.
func foldCredential(b *pebble.Batch, e domain.Event) error {
	switch e.Type {
	case domain.EventServiceKeyCreated, domain.EventAppRegistered:
		c, err := domain.CredentialFromEvent(e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		h, _ := domain.ParseKeyHash(c.KeyHash) // checked by CredentialFromEvent
		if _, closer, err := b.Get(credKey(c.ID)); err == nil {
			closer.Close()
			return reject(RejectInvalid, fmt.Errorf("event %s: credential %s exists already", e.ID, c.ID))
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return err
		}
		if _, closer, err := b.Get(keyHashKey(h)); err == nil {
			closer.Close()
			return reject(RejectInvalid, fmt.Errorf("event %s: a credential with this key hash exists already", e.ID))
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return err
		}
		if err := b.Set(credKey(c.ID), mustJSON(c), nil); err != nil {
			return err
		}
		return b.Set(keyHashKey(h), []byte(c.ID), nil)
	default:
		id, by, err := domain.RevokedCredential(e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		c, err := getCredential(b, id)
		if errors.Is(err, errNoCredential) {
			return reject(RejectInvalid, fmt.Errorf("event %s: no credential %s", e.ID, id))
		}
		if err != nil {
			return err
		}
		want := domain.KindServiceKey
		if e.Type == domain.EventAppRevoked {
			want = domain.KindApp
		}
		if c.Kind != want {
			return reject(RejectInvalid, fmt.Errorf("event %s: credential %s is a %s", e.ID, id, c.Kind))
		}
		if c.Revoked() {
			return nil
		}
		c.RevokedAt, c.RevokedBy = e.Time, by
		if err := b.Set(credKey(c.ID), mustJSON(c), nil); err != nil {
			return err
		}
		h, _ := domain.ParseKeyHash(c.KeyHash)
		return b.Delete(keyHashKey(h), nil)
	}
}

var errNoCredential = errors.New("no such credential")

func getCredential(r reader, id string) (domain.Credential, error) {
	var c domain.Credential
	err := getJSON(r, credKey(id), &c)
	if errors.Is(err, pebble.ErrNotFound) {
		return c, errNoCredential
	}
	if err != nil {
		return c, fmt.Errorf("credential %s: %w", id, err)
	}
	return c, nil
}

// Role is a user's role as far as this projection has applied: from
// memory, for validate's hot path. An unknown user is a user.
func (p *Projection) Role(userID string) domain.Role {
	p.rolesMu.RLock()
	r, ok := p.roles[userID]
	p.rolesMu.RUnlock()
	if !ok {
		return domain.RoleUser
	}
	return r
}

// UserExists reports whether a user has registered.
func (p *Projection) UserExists(userID string) (bool, error) {
	_, closer, err := p.db.Get(userKey(userID))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// ActiveKey is the active credential (service key or app) whose key hashes
// to h, or ok false. The lookup is by the hash of a 256-bit secret, which
// leaks nothing about the secret; the stored hash is compared again in
// constant time all the same.
func (p *Projection) ActiveKey(h domain.KeyHash) (domain.Credential, bool, error) {
	id, closer, err := p.db.Get(keyHashKey(h))
	if errors.Is(err, pebble.ErrNotFound) {
		return domain.Credential{}, false, nil
	}
	if err != nil {
		return domain.Credential{}, false, fmt.Errorf("key lookup: %w", err)
	}
	c, err := getCredential(p.db, string(id))
	closer.Close()
	if err != nil {
		return domain.Credential{}, false, err
	}
	stored, err := domain.ParseKeyHash(c.KeyHash)
	if err != nil || !stored.Equal(h) || c.Revoked() {
		return domain.Credential{}, false, nil
	}
	return c, true, nil
}

// Credential is a service key or app by id, revoked or not; kind must
// match. ok is false for none.
func (p *Projection) Credential(kind, id string) (domain.Credential, bool, error) {
	c, err := getCredential(p.db, id)
	if errors.Is(err, errNoCredential) || (err == nil && c.Kind != kind) {
		return domain.Credential{}, false, nil
	}
	return c, err == nil, err
}

// ListCredentials lists the service keys or apps (kind), revoked ones
// included, oldest first.
func (p *Projection) ListCredentials(kind string) ([]domain.Credential, error) {
	lower := []byte{prefixCred}
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []domain.Credential
	for ok := it.First(); ok; ok = it.Next() {
		c, err := getCredential(p.db, string(it.Key()[1:]))
		if err != nil {
			return nil, err
		}
		if c.Kind == kind {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b domain.Credential) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, it.Error()
}

// RegistryVersion is the version of a registry's subject as far as this
// projection has applied it.
func (p *Projection) RegistryVersion(registry string) (eventstore.Version, error) {
	return getVersion(p.db, eventstore.RegistrySubject(registry))
}
