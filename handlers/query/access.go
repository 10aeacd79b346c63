package query

import (
	"errors"

	"github.com/sessionledger/ledger/domain"
)

// Errors of key checks.
var (
	// ErrAPIKeyInvalid: the X-API-Key is no active service key.
	ErrAPIKeyInvalid = errors.New("API key invalid")
	// ErrAppKeyInvalid: the X-API-Key is no active app's key.
	ErrAppKeyInvalid = errors.New("app key invalid")
)

type (
	// keyReader finds active service keys and apps by the hash of their
	// key, and lists them.
	keyReader interface {
		ActiveKey(h domain.KeyHash) (domain.Credential, bool, error)
		ListCredentials(kind string) ([]domain.Credential, error)
	}
	// roleReader is a user's role as the projection folded it, cheap
	// enough for validate's hot path.
	roleReader interface {
		Role(userID string) domain.Role
	}
	userLookup interface {
		UserExists(userID string) (bool, error)
	}
)

// AccessHandler checks service keys and app keys and lists them. The
// bootstrap key, which is in no event, is the HTTP port's business.
type AccessHandler struct {
	Keys  keyReader
	Users userLookup
}

// NewAccess builds the key checks over the projection.
func NewAccess(keys interface {
	keyReader
	userLookup
}) (AccessHandler, error) {
	if keys == nil {
		return AccessHandler{}, errors.New("query.NewAccess: a key reader is required")
	}
	return AccessHandler{Keys: keys, Users: keys}, nil
}

// ServiceKey is the principal of an active service key (ErrAPIKeyInvalid
// for anything else: malformed, unknown, revoked, an app's key).
func (h AccessHandler) ServiceKey(raw string) (domain.Principal, error) {
	if h.Keys == nil || !domain.IsServiceKey(raw) {
		return domain.Principal{}, ErrAPIKeyInvalid
	}
	c, ok, err := h.Keys.ActiveKey(domain.HashKey(raw))
	if err != nil {
		return domain.Principal{}, err
	}
	if !ok || c.Kind != domain.KindServiceKey {
		return domain.Principal{}, ErrAPIKeyInvalid
	}
	return domain.Principal{KeyID: c.ID, KeyName: c.Name, Scopes: c.Scopes}, nil
}

// App is the active app whose key raw is (ErrAppKeyInvalid otherwise).
func (h AccessHandler) App(raw string) (domain.Credential, error) {
	if h.Keys == nil || !domain.IsAppKey(raw) {
		return domain.Credential{}, ErrAppKeyInvalid
	}
	c, ok, err := h.Keys.ActiveKey(domain.HashKey(raw))
	if err != nil {
		return domain.Credential{}, err
	}
	if !ok || c.Kind != domain.KindApp {
		return domain.Credential{}, ErrAppKeyInvalid
	}
	return c, nil
}

// List lists the service keys (domain.KindServiceKey) or apps
// (domain.KindApp), revoked ones included, oldest first.
func (h AccessHandler) List(kind string) ([]domain.Credential, error) {
	if h.Keys == nil {
		return nil, nil
	}
	return h.Keys.ListCredentials(kind)
}

// UserExists says whether the user registered (ErrUnknownUser if not).
func (h AccessHandler) UserExists(userID string) error {
	if h.Users == nil {
		return ErrUnknownUser
	}
	ok, err := h.Users.UserExists(userID)
	if err == nil && !ok {
		err = ErrUnknownUser
	}
	return err
}
