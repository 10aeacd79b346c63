package query

import (
	"context"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// fakeAPIKeys holds each user's keys that are not revoked.
type fakeAPIKeys map[string][]domain.APIKey

func (f fakeAPIKeys) UserAPIKeys(userID string) ([]domain.APIKey, error) { return f[userID], nil }

// TestAPIKeyListShowsNoSecret: the list says which keys are active or
// expired, hints at each with its prefix and the start of its id, and
// holds nothing of the secret.
func TestAPIKeyListShowsNoSecret(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	raw, id, hash, err := domain.NewAPIKey(fixedRand{})
	if err != nil {
		t.Fatal(err)
	}
	keys := fakeAPIKeys{"u1": {
		{ID: id, Name: "ci", Hash: hash, CreatedAt: now.Add(-time.Hour), ExpiresAt: now},
		{ID: "0123456789abcdef0123456789abcdef", Name: "laptop", CreatedAt: now.Add(-2 * time.Hour), LastUsedAt: now.Add(-time.Minute)},
	}}
	got, err := APIKeysHandler{Keys: keys, Now: func() time.Time { return now }}.Handle(context.Background(), "u1")
	if err != nil || len(got) != 2 {
		t.Fatalf("%+v %v", got, err)
	}
	if got[0].Status != "expired" || got[1].Status != "active" || got[1].LastUsedAt.IsZero() {
		t.Fatalf("statuses: %+v", got)
	}
	if got[0].Hint != "pak_"+id[:8]+"…" || len(raw) <= len(got[0].Hint) {
		t.Fatalf("hint %q of key %s", got[0].Hint, id)
	}
}

type fixedRand struct{}

func (fixedRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i)
	}
	return len(p), nil
}
