package command

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// Deps are what every command handler needs. All are required except
// Rand (crypto/rand when nil); New checks.
type Deps struct {
	Users  *Users
	Log    eventLog
	Hasher passwordHasher
	Creds  credentialReader
	Policy domain.Policy
	// Throttle slows password guessing per account; Unknown answers
	// logins for emails no account has alike.
	Throttle domain.LoginThrottle
	Unknown  *UnknownEmails
	Now      func() time.Time
	NewID    func() string // user ids
	Rand     io.Reader     // token randomness; crypto/rand when nil
	// APIKeys bound personal API keys; the zero value is
	// domain.DefaultAPIKeyRules.
	APIKeys domain.APIKeyRules
	// Secrets seals personal data (the email at signup) and secrets (a
	// TOTP seed, mfa.go) under each user's data key; required.
	Secrets ports.Secrets
	// TOTPIssuer names the ledger in authenticator apps;
	// DefaultTOTPIssuer when empty.
	TOTPIssuer string
}

type (
	passwordHasher interface {
		Hash(password string) (string, error)
		Verify(password, hash string) (bool, error)
		// Burn spends the work of a Verify and fails: what a login for
		// an unknown email costs, so it cannot be told apart by time. It
		// returns an error only when Verify would (ErrBusy).
		Burn(password string) error
	}
	credentialReader interface {
		Credentials(normalizedEmail string) (userID, passwordHash string, err error)
		// ClaimedUser is the user of an email's first authentic claim, or
		// domain.ErrUserNotFound.
		ClaimedUser(emailHash string) (string, error)
		// LoginFailures is an account's recent failed logins, as folded
		// from its history.
		LoginFailures(userID string) (domain.LoginFailures, error)
	}
)

// Handlers are the write side's commands, wired once.
type Handlers struct {
	Signup       SignupHandler
	Login        LoginHandler
	Logout       LogoutHandler
	LogoutOthers LogoutOthersHandler
	Terminate    TerminateHandler
	// Personal API keys (apikeys.go).
	CreateAPIKey CreateAPIKeyHandler
	RevokeAPIKey RevokeAPIKeyHandler
	APIKeyLogin  APIKeyLoginHandler
	// The second factor (mfa.go).
	StartMFA   StartMFAHandler
	ConfirmMFA ConfirmMFAHandler
	DisableMFA DisableMFAHandler
	MFALogin   MFALoginHandler
}

// New builds every command handler, refusing missing dependencies at start
// rather than at the first request.
func New(d Deps) (Handlers, error) {
	switch {
	case d.Users == nil, d.Log == nil, d.Hasher == nil, d.Creds == nil, d.Unknown == nil, d.Now == nil, d.NewID == nil, d.Secrets == nil:
		return Handlers{}, errors.New("command.New: Users, Log, Hasher, Creds, Unknown, Now, NewID and Secrets are required")
	}
	if err := d.Policy.Validate(); err != nil {
		return Handlers{}, fmt.Errorf("command.New: %w", err)
	}
	if err := d.Throttle.Validate(); err != nil {
		return Handlers{}, fmt.Errorf("command.New: %w", err)
	}
	if d.APIKeys == (domain.APIKeyRules{}) {
		d.APIKeys = domain.DefaultAPIKeyRules()
	}
	if err := d.APIKeys.Validate(); err != nil {
		return Handlers{}, fmt.Errorf("command.New: %w", err)
	}
	return Handlers{
		Signup: SignupHandler{d}, Login: LoginHandler{d}, Logout: LogoutHandler{d},
		LogoutOthers: LogoutOthersHandler{d}, Terminate: TerminateHandler{d},
		CreateAPIKey: CreateAPIKeyHandler{d}, RevokeAPIKey: RevokeAPIKeyHandler{d}, APIKeyLogin: APIKeyLoginHandler{d},
		StartMFA: StartMFAHandler{d}, ConfirmMFA: ConfirmMFAHandler{d}, DisableMFA: DisableMFAHandler{d}, MFALogin: MFALoginHandler{d},
	}, nil
}

func (d Deps) rand() io.Reader {
	if d.Rand != nil {
		return d.Rand
	}
	return rand.Reader
}

// Issued is a new session as handed to the client: the only moment the raw
// token exists outside the client.
type Issued struct {
	Token     string
	UserID    string
	SessionID string
	ExpiresIn time.Duration // to the max deadline
	Seq       uint64        // stream sequence of the session_started event
}

// Credentials are what signup and login take.
type Credentials struct {
	Email        string
	Password     string
	KeepLoggedIn bool
	// TOTPCode, for a login of a user with a second factor, saves the
	// round trip of MFA_REQUIRED (login only; signup ignores it).
	TOTPCode *string
}

// newSession draws a token and decides the login: session_started, after
// the session_evicted events of the oldest live sessions if the user is at
// the live-session limit.
func (d Deps) newSession(u *domain.User, keepLoggedIn bool, at time.Time) ([]domain.Event, Issued, error) {
	raw, sid, hash, err := domain.NewToken(d.rand())
	if err != nil {
		return nil, Issued{}, err
	}
	events := u.Login(sid, hash, domain.SessionMethodPassword, keepLoggedIn, false, at, d.Policy)
	return events, Issued{Token: raw, UserID: u.ID(), SessionID: sid, ExpiresIn: d.Policy.MaxLifetime(keepLoggedIn, false)}, nil
}

// SessionRef names the authenticated caller: the session whose bearer token
// came with the request.
type SessionRef struct {
	UserID    string
	SessionID string
}

// LogoutHandler revokes the caller's session.
type LogoutHandler struct{ Deps }

func (h LogoutHandler) Handle(ctx context.Context, caller SessionRef) (uint64, error) {
	return h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, err := u.Logout(caller.SessionID, at)
		if err != nil {
			return nil, err
		}
		return []domain.Event{e}, nil
	})
}

// LogoutOthersHandler revokes all the caller's other live sessions and
// returns how many it revoked.
type LogoutOthersHandler struct{ Deps }

func (h LogoutOthersHandler) Handle(ctx context.Context, caller SessionRef) (revoked int, seq uint64, err error) {
	seq, err = h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, n, ok, err := u.RevokeOthers(caller.SessionID, at)
		revoked = n
		if err != nil || !ok {
			return nil, err
		}
		return []domain.Event{e}, nil
	})
	return revoked, seq, err
}

// TerminateHandler ends one session of the caller's user by id.
type TerminateHandler struct{ Deps }

func (h TerminateHandler) Handle(ctx context.Context, caller SessionRef, target string) (uint64, error) {
	if !domain.IsSessionID(target) {
		return 0, domain.ErrSessionNotFound
	}
	// The target may be long dead: then the user's state does not hold it
	// unless asked for, and terminating it must still be a no-op, not
	// "not found".
	return h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID, target}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, ok, err := u.Terminate(caller.SessionID, target, at)
		if err != nil || !ok {
			return nil, err
		}
		return []domain.Event{e}, nil
	})
}
