package command

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

func (f *fakeLedger) apiKeys(userID string) []domain.APIKey {
	var out []domain.APIKey
	for _, k := range f.keys[userID] {
		out = append(out, k)
	}
	return out
}

// foldAPIKey folds the API key events as the projection does (under mu).
func (f *fakeLedger) foldAPIKey(e domain.Event) error {
	if f.keys == nil {
		f.keys = map[string]map[string]domain.APIKey{}
	}
	if f.keys[e.UserID] == nil {
		f.keys[e.UserID] = map[string]domain.APIKey{}
	}
	switch e.Type {
	case domain.EventAPIKeyCreated:
		k, err := domain.APIKeyFromEvent(e)
		if err != nil {
			return err
		}
		f.keys[e.UserID][k.ID] = k
	case domain.EventAPIKeyRevoked:
		p, err := domain.DecodePayload[domain.APIKeyRevoked](e)
		if err != nil {
			return err
		}
		delete(f.keys[e.UserID], p.KeyID)
	case domain.EventAPIKeyUsed:
		p, err := domain.DecodePayload[domain.APIKeyUsed](e)
		if err != nil {
			return err
		}
		if k, ok := f.keys[e.UserID][p.KeyID]; ok {
			f.keys[e.UserID][p.KeyID] = k.WithUse(e.Time)
		}
	}
	return nil
}

// TestAPIKeyExchangeLosesToARevocation: a revocation another instance
// appends between the exchange's read and its append makes the append
// conflict; the exchange decides again on the new state and fails, so a
// revoked key never starts a session. It fails as a wrong password does,
// and no sooner than the failure floor.
func TestAPIKeyExchangeLosesToARevocation(t *testing.T) {
	fx := newFixture(t)
	caller := fx.signup(t, "race@example.com")
	ref := SessionRef{UserID: caller.UserID, SessionID: caller.SessionID}
	created, err := fx.h.CreateAPIKey.Handle(context.Background(), ref, NewAPIKey{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if created.ExpiresAt != (time.Time{}) || created.Seq == 0 || created.KeyID == "" {
		t.Fatalf("created %+v", created)
	}
	revoked := false
	fx.ledger.beforeAppend = func(string) error {
		if revoked {
			return nil
		}
		revoked = true
		fx.ledger.beforeAppend = nil
		_, err := fx.h.RevokeAPIKey.Handle(context.Background(), ref, created.KeyID)
		fx.ledger.beforeAppend = func(string) error { return nil }
		return err
	}
	start := time.Now()
	_, err = fx.h.APIKeyLogin.Handle(context.Background(), APIKeyCredentials{Email: "race@example.com", APIKey: created.Key})
	if !errors.Is(err, domain.ErrInvalidCredentials) || !revoked {
		t.Fatalf("exchange racing a revocation: %v (revoked: %v)", err, revoked)
	}
	if d := time.Since(start); d < APIKeyFailureFloor {
		t.Fatalf("failed in %s, under the floor", d)
	}
	last := fx.ledger.appended[len(fx.ledger.appended)-1]
	if p, _ := domain.DecodePayload[domain.LoginFailed](last); last.Type != domain.EventLoginFailed || p.Reason != domain.LoginFailedWrongAPIKey {
		t.Fatalf("last event %s %s", last.Type, last.Payload)
	}
	u, _, _ := fx.ledger.LoadUser(caller.UserID)
	if u.SessionCount() != 1 {
		t.Fatalf("%d sessions, want only the signup's", u.SessionCount())
	}
}

// TestAPIKeyExchangeIssuesASession: the exchange answers like a login,
// with the time to the session's max deadline, which the key's expiry caps.
func TestAPIKeyExchangeIssuesASession(t *testing.T) {
	fx := newFixture(t)
	caller := fx.signup(t, "ok@example.com")
	ttl := int64(3600)
	created, err := fx.h.CreateAPIKey.Handle(context.Background(), SessionRef{UserID: caller.UserID, SessionID: caller.SessionID}, NewAPIKey{Name: "hour", ExpiresInSeconds: &ttl})
	if err != nil || !created.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("created %+v %v", created, err)
	}
	fx.now = t0.Add(20 * time.Minute)
	is, err := fx.h.APIKeyLogin.Handle(context.Background(), APIKeyCredentials{Email: "OK@example.com", APIKey: created.Key, KeepLoggedIn: true})
	if err != nil || is.ExpiresIn != 40*time.Minute || is.UserID != caller.UserID || is.Token == "" || fx.hasher.verifies != 0 {
		t.Fatalf("issued %+v %v (verifies %d)", is, err, fx.hasher.verifies)
	}
	for _, bad := range []int64{0, -1, 3650*24*3600 + 1} {
		if _, err := fx.h.CreateAPIKey.Handle(context.Background(), SessionRef{UserID: caller.UserID, SessionID: caller.SessionID}, NewAPIKey{Name: "x", ExpiresInSeconds: &bad}); !errors.Is(err, domain.ErrInvalidAPIKeyTTL) {
			t.Errorf("expires_in %d: %v", bad, err)
		}
	}
}
