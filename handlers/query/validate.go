package query

import (
	"context"
	"errors"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// ErrTokenInvalid covers a missing, malformed, unknown or wrong-secret token:
// callers cannot tell these apart, so tokens cannot be probed.
var ErrTokenInvalid = errors.New("token invalid")

type sessionReader interface {
	// SessionState answers a session by value (or ErrSessionNotFound), so
	// a validate puts no copy of the session's state on the heap.
	SessionState(id string) (domain.Session, error)
}

// Validation is a token's session and its verdict now, and the role of
// the session's user (for gateways: X-Ledger-Role, ?require_role=). The
// session is a copy, by value, so that a validation costs no allocation
// of it.
type Validation struct {
	Session domain.Session
	Verdict domain.Verdict
	Role    domain.Role
}

// ValidateHandler answers "is this token valid now, and why not?".
type ValidateHandler struct {
	Sessions sessionReader
	Roles    roleReader   // nil: every user is a user
	Uses     *UseRecorder // nil: uses are not recorded
	Now      func() time.Time
}

// Handle looks the token's session up, checks its secret in constant time,
// and computes the verdict. With touch, a valid session's use is queued.
func (h ValidateHandler) Handle(_ context.Context, rawToken string, touch bool) (Validation, error) {
	sid, hash, err := domain.ParseToken(rawToken)
	if err != nil {
		return Validation{}, ErrTokenInvalid
	}
	var val Validation
	s := &val.Session
	*s, err = h.Sessions.SessionState(sid)
	if errors.Is(err, domain.ErrSessionNotFound) {
		return Validation{}, ErrTokenInvalid
	}
	if err != nil {
		return Validation{}, err
	}
	if !s.TokenHash().Equal(hash) {
		return Validation{}, ErrTokenInvalid
	}
	now := h.Now()
	val.Verdict = s.Current(now)
	if val.Verdict.Valid && touch && h.Uses != nil {
		if at, ok := h.Uses.TouchedAt(s, now); ok {
			// A use is on its way into the log; answer with the deadline
			// it will give, as every later validate will.
			val.Verdict = s.CurrentWithUse(at, now)
		}
	}
	val.Role = domain.RoleUser
	if h.Roles != nil {
		val.Role = h.Roles.Role(s.UserID())
	}
	return val, nil
}

// Deps are what the query handlers need; Uses is optional (uses are then
// not recorded), the rest required.
type Deps struct {
	Sessions interface {
		sessionReader
		userSessionReader
		sessionOwners
	}
	Uses *UseRecorder
	Log  userHistory
	Now  func() time.Time
	// Revocations, if set, serves the revocation feed.
	Revocations revocationLog
	// APIKeys lists personal API keys (apikeys.go).
	APIKeys apiKeyReader
	// Secrets, if set, opens the sealed emails the audit shows
	// (otherwise they show as "(sealed)").
	Secrets SecretOpener
}

// Handlers are the read side's queries, wired once.
type Handlers struct {
	Validate ValidateHandler
	Sessions SessionsHandler
	Audit    AuditHandler
	Feed     FeedHandler
	APIKeys  APIKeysHandler
}

// New builds every query handler, refusing missing dependencies at start.
func New(d Deps) (Handlers, error) {
	if d.Sessions == nil || d.Log == nil || d.Now == nil || d.APIKeys == nil {
		return Handlers{}, errors.New("query.New: Sessions, Log, Now and APIKeys are required")
	}
	roles, _ := d.Sessions.(roleReader) // the projection keeps roles; fakes may not
	return Handlers{
		Validate: ValidateHandler{Sessions: d.Sessions, Roles: roles, Uses: d.Uses, Now: d.Now},
		Sessions: SessionsHandler{Sessions: d.Sessions, Now: d.Now},
		Audit:    AuditHandler{Owners: d.Sessions, Log: d.Log, Secrets: d.Secrets},
		Feed:     FeedHandler{Log: d.Revocations},
		APIKeys:  APIKeysHandler{Keys: d.APIKeys, Now: d.Now},
	}, nil
}
