package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// Personal API keys (domain/apikey.go): a logged-in user creates and
// revokes them; anyone holding one exchanges it, with the account's email,
// for a session as a login would.

// NewAPIKey is what creating a key takes. ExpiresInSeconds nil is a key
// that never expires.
type NewAPIKey struct {
	Name             string
	ExpiresInSeconds *int64
}

// CreatedAPIKey is a new key as handed to its user: the only moment the raw
// key exists outside the client.
type CreatedAPIKey struct {
	Key       string
	KeyID     string
	Name      string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	Seq       uint64
}

// CreateAPIKeyHandler makes a key for the caller's user.
type CreateAPIKeyHandler struct{ Deps }

func (h CreateAPIKeyHandler) Handle(ctx context.Context, caller SessionRef, req NewAPIKey) (CreatedAPIKey, error) {
	if err := domain.ValidateAPIKeyName(req.Name); err != nil {
		return CreatedAPIKey{}, err
	}
	var ttl time.Duration
	if s := req.ExpiresInSeconds; s != nil {
		if *s < 1 || *s > int64(h.APIKeys.MaxLifetime/time.Second) {
			return CreatedAPIKey{}, domain.ErrInvalidAPIKeyTTL
		}
		ttl = time.Duration(*s) * time.Second
	}
	raw, keyID, hash, err := domain.NewAPIKey(h.rand())
	if err != nil {
		return CreatedAPIKey{}, err
	}
	out := CreatedAPIKey{Key: raw, KeyID: keyID, Name: req.Name}
	seq, err := h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		var expires time.Time
		if ttl > 0 {
			expires = at.Add(ttl)
		}
		e, err := u.CreateAPIKey(caller.SessionID, keyID, req.Name, hash, expires, at, h.APIKeys)
		if err != nil {
			return nil, err
		}
		out.CreatedAt, out.ExpiresAt = e.Time, expires.UTC()
		if expires.IsZero() {
			out.ExpiresAt = time.Time{}
		}
		return []domain.Event{e}, nil
	})
	if err != nil {
		return CreatedAPIKey{}, err
	}
	out.Seq = seq
	return out, nil
}

// RevokeAPIKeyHandler revokes one of the caller's user's keys by id.
type RevokeAPIKeyHandler struct{ Deps }

func (h RevokeAPIKeyHandler) Handle(ctx context.Context, caller SessionRef, keyID string) (uint64, error) {
	if !domain.IsAPIKeyID(keyID) {
		return 0, domain.ErrAPIKeyNotFound
	}
	return h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, err := u.RevokeAPIKey(caller.SessionID, keyID, at)
		if err != nil {
			return nil, err
		}
		return []domain.Event{e}, nil
	})
}

// APIKeyCredentials are what an exchange takes.
type APIKeyCredentials struct {
	Email        string
	APIKey       string
	KeepLoggedIn bool
}

// APIKeyFailureFloor is the least time a failed exchange takes. A key is
// checked with one SHA-256, so without it a known account's failure (which
// appends login_failed) would answer measurably later than an unknown
// email's (which appends nothing), and tell which accounts exist. It is
// about what a wrong password's argon2id check costs.
const APIKeyFailureFloor = 50 * time.Millisecond

// APIKeyLoginHandler exchanges an email and an API key for a session.
//
// It fails exactly as a login with a wrong password does: the same error
// for an unknown email, a malformed, unknown, revoked or expired key or a
// wrong secret, in no less than APIKeyFailureFloor, and on a known account
// a login_failed (reason wrong_api_key) that counts towards the account's
// login throttle, which refuses API keys and passwords alike.
type APIKeyLoginHandler struct{ Deps }

func (h APIKeyLoginHandler) Handle(ctx context.Context, c APIKeyCredentials) (Issued, error) {
	start := time.Now() // elapsed time, not the ledger's clock
	is, err := h.exchange(ctx, c)
	if errors.Is(err, domain.ErrInvalidCredentials) {
		t := time.NewTimer(APIKeyFailureFloor - time.Since(start))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return is, err
}

func (h APIKeyLoginHandler) exchange(ctx context.Context, c APIKeyCredentials) (Issued, error) {
	// An API key costs no slow hash: nothing to burn for an unknown email.
	email, userID, _, err := h.account(c.Email, func() error { return nil })
	if err != nil {
		return Issued{}, err
	}
	keyID, secret, parseErr := domain.ParseAPIKey(c.APIKey)
	raw, sid, tokenHash, err := domain.NewToken(h.rand())
	if err != nil {
		return Issued{}, err
	}
	var ok bool
	var expiresIn time.Duration
	seq, err := h.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		var events []domain.Event
		events, ok = u.LoginWithAPIKey(domain.APIKeyLogin{
			KeyID: keyID, Secret: secret, Malformed: parseErr != nil,
			SessionID: sid, TokenHash: tokenHash, KeepLoggedIn: c.KeepLoggedIn, Email: email,
		}, at, h.Policy, h.APIKeys, h.Throttle)
		if ok {
			started := events[len(events)-1]
			p, err := domain.DecodePayload[domain.SessionStarted](started)
			if err != nil {
				return nil, err
			}
			expiresIn = p.MaxExpiresAt.Sub(started.Time)
		}
		return events, nil
	})
	switch {
	case errors.Is(err, domain.ErrUserNotFound):
		return Issued{}, fmt.Errorf("api key login: user %s has credentials but no history", userID)
	case err != nil && !ok:
		return Issued{}, fmt.Errorf("record failed login: %w", err)
	case err != nil:
		return Issued{}, err
	case !ok:
		return Issued{}, domain.ErrInvalidCredentials
	}
	return Issued{Token: raw, UserID: userID, SessionID: sid, ExpiresIn: expiresIn, Seq: seq}, nil
}
