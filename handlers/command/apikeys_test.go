package command

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

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
	fx.ledger.BeforeAppend(func(string) error {
		if revoked {
			return nil
		}
		revoked = true
		fx.ledger.BeforeAppend(nil)
		_, err := fx.h.RevokeAPIKey.Handle(context.Background(), ref, created.KeyID)
		fx.ledger.BeforeAppend(func(string) error { return nil })
		return err
	})
	start := time.Now()
	_, err = fx.h.APIKeyLogin.Handle(context.Background(), APIKeyCredentials{Email: "race@example.com", APIKey: created.Key})
	if !errors.Is(err, domain.ErrInvalidCredentials) || !revoked {
		t.Fatalf("exchange racing a revocation: %v (revoked: %v)", err, revoked)
	}
	if d := time.Since(start); d < APIKeyFailureFloor {
		t.Fatalf("failed in %s, under the floor", d)
	}
	appended := fx.ledger.Appended()
	last := appended[len(appended)-1]
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
	if err != nil || is.ExpiresIn != 40*time.Minute || is.UserID != caller.UserID || is.Token == "" || fx.hasher.Verifies.Load() != 0 {
		t.Fatalf("issued %+v %v (verifies %d)", is, err, fx.hasher.Verifies.Load())
	}
	for _, bad := range []int64{0, -1, 3650*24*3600 + 1} {
		if _, err := fx.h.CreateAPIKey.Handle(context.Background(), SessionRef{UserID: caller.UserID, SessionID: caller.SessionID}, NewAPIKey{Name: "x", ExpiresInSeconds: &bad}); !errors.Is(err, domain.ErrInvalidAPIKeyTTL) {
			t.Errorf("expires_in %d: %v", bad, err)
		}
	}
}
