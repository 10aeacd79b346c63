package query

import (
	"context"
	"time"

	"github.com/sessionledger/ledger/domain"
)

type apiKeyReader interface {
	// UserAPIKeys are a user's keys that are not revoked, newest first.
	UserAPIKeys(userID string) ([]domain.APIKey, error)
}

// APIKeyView is one line of the caller's key list: never the key, only a
// hint of how it begins.
type APIKeyView struct {
	KeyID      string
	Name       string
	Hint       string
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never
	LastUsedAt time.Time // zero: never used; recorded at most once per use granularity
	Status     string    // active or expired
}

// APIKeysHandler lists the user's keys that are not revoked (at most
// domain.APIKeyRules.MaxPerUser), newest first.
type APIKeysHandler struct {
	Keys apiKeyReader
	Now  func() time.Time
}

func (h APIKeysHandler) Handle(_ context.Context, userID string) ([]APIKeyView, error) {
	keys, err := h.Keys.UserAPIKeys(userID)
	if err != nil {
		return nil, err
	}
	now := h.Now()
	out := make([]APIKeyView, 0, len(keys))
	for _, k := range keys {
		status := "active"
		if k.ExpiredAt(now) {
			status = "expired"
		}
		out = append(out, APIKeyView{KeyID: k.ID, Name: k.Name, Hint: domain.APIKeyHint(k.ID), CreatedAt: k.CreatedAt,
			ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsedAt, Status: status})
	}
	return out, nil
}
