package projections

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/sessionledger/ledger/domain"
)

// A user's API keys that are not revoked, one record each (JSON apiKeyRecord)
// under
//
//	k<user id>\x00<key id>
//
// api_key_created writes one, api_key_used moves its last use, and
// api_key_revoked deletes it: what is left is what the cap counts and an
// exchange decides against, at most domain.APIKeyRules.MaxPerUser per user.
// Revoked keys live on in the log only.
const prefixAPIKey = 'k'

func apiKeyPrefix(userID string) []byte     { return append(append([]byte{prefixAPIKey}, userID...), 0) }
func apiKeyKey(userID, keyID string) []byte { return append(apiKeyPrefix(userID), keyID...) }

// apiKeyRecord is a stored key: its hash only, never the key.
type apiKeyRecord struct {
	Name       string    `json:"name"`
	KeyHash    string    `json:"key_hash"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	LastUsedAt time.Time `json:"last_used_at"`
}

func (r apiKeyRecord) key(id string) (domain.APIKey, error) {
	h, err := domain.ParseTokenHash(r.KeyHash)
	if err != nil {
		return domain.APIKey{}, fmt.Errorf("api key %s: %w", id, err)
	}
	return domain.APIKey{ID: id, Name: r.Name, Hash: h, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, LastUsedAt: r.LastUsedAt}, nil
}

func apiKeyRecordOf(k domain.APIKey) apiKeyRecord {
	return apiKeyRecord{Name: k.Name, KeyHash: k.Hash.String(), CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsedAt}
}

// foldAPIKey applies api_key_created, api_key_revoked and api_key_used.
func foldAPIKey(b *pebble.Batch, e domain.Event) error {
	switch e.Type {
	case domain.EventAPIKeyCreated:
		k, err := domain.APIKeyFromEvent(e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		if _, closer, err := b.Get(apiKeyKey(e.UserID, k.ID)); err == nil {
			closer.Close()
			return reject(RejectInvalid, fmt.Errorf("event %s: api key %s exists already", e.ID, k.ID))
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return err
		}
		return b.Set(apiKeyKey(e.UserID, k.ID), mustJSON(apiKeyRecordOf(k)), nil)
	case domain.EventAPIKeyRevoked:
		p, err := domain.DecodePayload[domain.APIKeyRevoked](e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		return b.Delete(apiKeyKey(e.UserID, p.KeyID), nil) // gone already: nothing to do
	case domain.EventAPIKeyUsed:
		p, err := domain.DecodePayload[domain.APIKeyUsed](e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		var rec apiKeyRecord
		switch err := getJSON(b, apiKeyKey(e.UserID, p.KeyID), &rec); {
		case errors.Is(err, pebble.ErrNotFound):
			return nil // revoked since: the log keeps the fact
		case err != nil:
			return err
		}
		if e.Time.After(rec.LastUsedAt) {
			rec.LastUsedAt = e.Time.UTC()
		}
		return b.Set(apiKeyKey(e.UserID, p.KeyID), mustJSON(rec), nil)
	}
	return nil
}

// userAPIKeys are a user's keys that are not revoked.
func userAPIKeys(r reader, userID string) ([]domain.APIKey, error) {
	prefix := apiKeyPrefix(userID)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []domain.APIKey
	for ok := it.First(); ok; ok = it.Next() {
		id := string(it.Key()[len(prefix):])
		var rec apiKeyRecord
		if err := json.Unmarshal(it.Value(), &rec); err != nil {
			return nil, fmt.Errorf("api key %s: %w", id, err)
		}
		k, err := rec.key(id)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, it.Error()
}

// UserAPIKeys lists a user's keys that are not revoked, newest first.
func (p *Projection) UserAPIKeys(userID string) ([]domain.APIKey, error) {
	snap := p.db.NewSnapshot()
	defer snap.Close()
	keys, err := userAPIKeys(snap, userID)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return domain.NewUser(userID, "", "", nil).WithAPIKeys(keys).APIKeys(), nil
}
