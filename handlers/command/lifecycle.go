package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// The account lifecycle (domain/lifecycle.go): password change, password
// reset by an emailed code or link, and login by an emailed code or magic
// link.

// Notice is one message to deliver: the only place a raw code or link
// token exists outside the user's mailbox.
type Notice struct {
	Email     string
	Purpose   domain.Purpose
	Code      string
	Token     string // the link's token; the adapter makes the link
	ExpiresAt time.Time
}

// Notifier delivers notices. Notify must return at once (or within a small
// bound): delivery happens after the request has been answered, and its
// failures are the adapter's to log (without the code) and count.
type Notifier interface {
	Notify(n Notice)
}

// ErrEmailNotConfigured: no delivery is configured, so codes and links
// cannot be sent (the routes answer alike for every email).
var ErrEmailNotConfigured = errors.New("no email delivery is configured")

type (
	// challengeKeys hash codes: the key of the signing key in force, and
	// that of any key of the ring by id (a code issued before a rotation
	// is checked with the key it was hashed with).
	challengeKeys interface {
		CurrentChallengeKey() (kid string, key []byte, err error)
		ChallengeKey(kid string) ([]byte, bool)
	}
	// challengeReader finds the user of a link, which names only its
	// challenge.
	challengeReader interface {
		ChallengeUser(challengeID string) (string, error)
	}
)

// LifecycleDeps are the lifecycle commands' dependencies: the command
// Deps, plus the code keys, the challenges' users and the notifier.
// Notifier may be nil (then the email routes answer
// ErrEmailNotConfigured); Rules' zero value is the default.
type LifecycleDeps struct {
	Deps
	Keys       challengeKeys
	Challenges challengeReader
	Notifier   Notifier
	Rules      domain.ChallengeRules
}

// LifecycleHandlers are the lifecycle commands.
type LifecycleHandlers struct {
	ChangePassword ChangePasswordHandler
	RequestReset   RequestCodeHandler
	RequestLogin   RequestCodeHandler
	ResetPassword  ResetPasswordHandler
	CodeLogin      CodeLoginHandler
}

// NewLifecycle builds the lifecycle commands, refusing missing
// dependencies.
func NewLifecycle(d LifecycleDeps) (LifecycleHandlers, error) {
	switch {
	case d.Users == nil, d.Log == nil, d.Hasher == nil, d.Creds == nil, d.Unknown == nil, d.Now == nil, d.Keys == nil, d.Challenges == nil:
		return LifecycleHandlers{}, errors.New("command.NewLifecycle: Users, Log, Hasher, Creds, Unknown, Now, Keys and Challenges are required")
	}
	if err := d.Policy.Validate(); err != nil {
		return LifecycleHandlers{}, fmt.Errorf("command.NewLifecycle: %w", err)
	}
	if err := d.Throttle.Validate(); err != nil {
		return LifecycleHandlers{}, fmt.Errorf("command.NewLifecycle: %w", err)
	}
	if d.Rules == (domain.ChallengeRules{}) {
		d.Rules = domain.DefaultChallengeRules()
	}
	return LifecycleHandlers{
		ChangePassword: ChangePasswordHandler{d},
		RequestReset:   RequestCodeHandler{d, domain.PurposePasswordReset},
		RequestLogin:   RequestCodeHandler{d, domain.PurposeLogin},
		ResetPassword:  ResetPasswordHandler{d},
		CodeLogin:      CodeLoginHandler{d},
	}, nil
}

// PasswordChange is what a password change takes.
type PasswordChange struct {
	Current, New        string
	RevokeOtherSessions bool
}

// ChangePasswordHandler changes the caller's password. A wrong current
// password fails as a wrong login does (ErrInvalidCredentials, a
// login_failed that counts towards the throttle), and a throttled account
// is refused before the check.
type ChangePasswordHandler struct{ LifecycleDeps }

func (h ChangePasswordHandler) Handle(ctx context.Context, caller SessionRef, c PasswordChange) (revoked int, seq uint64, err error) {
	if err := domain.ValidatePassword(c.New); err != nil {
		return 0, 0, err
	}
	u, _, err := h.Users.read.LoadUser(caller.UserID, caller.SessionID)
	if err != nil {
		return 0, 0, err
	}
	if u == nil {
		return 0, 0, domain.ErrUserNotFound
	}
	now := h.Now()
	if until, throttled := u.Failures().ThrottledAt(now); throttled {
		return 0, 0, domain.Throttled(until, now)
	}
	checked := u.PasswordHash()
	ok, err := h.Hasher.Verify(c.Current, checked)
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		if _, err := h.Users.Update(ctx, caller.UserID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
			return u.FailCurrentPassword(at, h.Throttle), nil
		}); err != nil {
			return 0, 0, fmt.Errorf("record failed password check: %w", err)
		}
		return 0, 0, domain.ErrInvalidCredentials
	}
	hash, err := h.Hasher.Hash(c.New)
	if err != nil {
		return 0, 0, err
	}
	seq, err = h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, n, err := u.ChangePassword(caller.SessionID, checked, hash, c.RevokeOtherSessions, at)
		revoked = n
		if errors.Is(err, domain.ErrPasswordMoved) {
			return nil, domain.ErrInvalidCredentials // the checked password is no longer the current one
		}
		if err != nil {
			return nil, err
		}
		return []domain.Event{e}, nil
	})
	return revoked, seq, err
}

// ChallengeRequestFloor is the least time a code request takes, whatever
// the email: a known one appends an event, an unknown one nothing, and
// the answer must not tell them apart by its timing.
const ChallengeRequestFloor = 100 * time.Millisecond

// RequestCodeHandler sends a code and a link for one purpose (a password
// reset, or a login) to an email, if it has an account. Its answer is the
// same whatever the email: only a malformed email (ErrInvalidEmail) and
// missing delivery (ErrEmailNotConfigured) are told. Any other error is
// returned for the adapter to log, not to show.
type RequestCodeHandler struct {
	LifecycleDeps
	purpose domain.Purpose
}

func (h RequestCodeHandler) Handle(ctx context.Context, rawEmail string) error {
	start := time.Now() // elapsed time, not the ledger's clock
	defer func() {
		t := time.NewTimer(ChallengeRequestFloor - time.Since(start))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}()
	if h.Notifier == nil {
		return ErrEmailNotConfigured
	}
	email, err := domain.NormalizeEmail(rawEmail)
	if err != nil {
		return err
	}
	userID, _, err := h.Creds.Credentials(email)
	if errors.Is(err, domain.ErrUserNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	kid, key, err := h.Keys.CurrentChallengeKey()
	if err != nil {
		return err
	}
	code, token, secrets, err := domain.NewChallenge(h.rand(), h.purpose, kid, key)
	if err != nil {
		return err
	}
	var expires time.Time
	_, err = h.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, err := u.RequestChallenge(h.purpose, secrets, at, h.Rules)
		if err != nil {
			return nil, err
		}
		expires = at.Add(h.Rules.TTL(h.purpose))
		return []domain.Event{e}, nil
	})
	if errors.Is(err, domain.ErrChallengeTooSoon) {
		return nil // one was sent a moment ago: send nothing, say nothing
	}
	if err != nil {
		return err
	}
	h.Notifier.Notify(Notice{Email: email, Purpose: h.purpose, Code: code, Token: token, ExpiresAt: expires})
	return nil
}

// CodeAnswer is an emailed code (with its email) or a link's token.
type CodeAnswer struct {
	Email string
	Code  string
	Token string
}

// answer finds the user a code or link is for and decides on it. ok: the
// challenge matched and success's events were appended; otherwise the
// failure was recorded and the error is domain.ErrInvalidCode (or a
// throttle).
func (d LifecycleDeps) answer(ctx context.Context, purpose domain.Purpose, a CodeAnswer, prepare func() error, success func(u *domain.User, c domain.Challenge, via string, at time.Time) ([]domain.Event, error)) (uint64, error) {
	start := time.Now()
	seq, err := d.decideAnswer(ctx, purpose, a, prepare, success)
	if errors.Is(err, domain.ErrInvalidCode) {
		t := time.NewTimer(APIKeyFailureFloor - time.Since(start))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return seq, err
}

func (d LifecycleDeps) decideAnswer(ctx context.Context, purpose domain.Purpose, a CodeAnswer, prepare func() error, success func(u *domain.User, c domain.Challenge, via string, at time.Time) ([]domain.Event, error)) (uint64, error) {
	ans := domain.ChallengeAnswer{Purpose: purpose, Via: domain.ViaCode, Code: a.Code, Key: d.Keys.ChallengeKey}
	var userID, email string
	if a.Token != "" {
		p, id, secret, err := domain.ParseLinkToken(a.Token)
		if err != nil || p != purpose {
			return 0, domain.ErrInvalidCode
		}
		ans.Via, ans.LinkID, ans.LinkSecret = domain.ViaLink, id, secret
		userID, err = d.Challenges.ChallengeUser(id)
		if errors.Is(err, domain.ErrUserNotFound) {
			return 0, domain.ErrInvalidCode
		}
		if err != nil {
			return 0, err
		}
	} else {
		var err error
		// Throttled and answered as a wrong code for a known account.
		if email, userID, _, err = d.lookup(a.Email, func() error { return nil }); errors.Is(err, domain.ErrInvalidCredentials) {
			return 0, domain.ErrInvalidCode
		} else if err != nil {
			return 0, err
		}
	}
	if err := d.notThrottled(userID); err != nil {
		return 0, err
	}
	// Check before the costly part (a new password's hash): a wrong
	// answer costs no hash.
	u, version, err := d.Users.read.LoadUser(userID)
	if err != nil {
		return 0, err
	}
	if u == nil {
		return 0, domain.ErrInvalidCode
	}
	if email != "" && domain.EmailHash(email) != u.EmailHash() {
		return 0, domain.ErrInvalidCode
	}
	ans.EmailHash = u.EmailHash()
	matched, prepared := false, prepare == nil
	if _, _, ok := u.AnswerChallenge(ans, domain.NextEventTime(d.Now(), version.Time), d.Throttle); ok && !prepared {
		if err := prepare(); err != nil {
			return 0, err
		}
		prepared = true
	}
	seq, err := d.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		c, failed, ok := u.AnswerChallenge(ans, at, d.Throttle)
		matched = ok
		if !ok {
			return failed, nil
		}
		if !prepared {
			// It did not match a moment ago: a race with another
			// answer. Let the caller try again.
			return nil, ErrTooMuchContention
		}
		return success(u, c, ans.Via, at)
	})
	switch {
	case err != nil && !matched:
		return 0, fmt.Errorf("record failed code: %w", err)
	case err != nil:
		return 0, err
	case !matched:
		return 0, domain.ErrInvalidCode
	}
	return seq, nil
}

// ResetRequest is what a password reset takes: the email and its code, or
// the link's token (the email is then optional; if given, it must be the
// account's), and the new password.
type ResetRequest struct {
	CodeAnswer
	NewPassword string
}

// ResetPasswordHandler resets a password with an emailed code or link: the
// new hash, and every session of the user revoked. A wrong code is a
// failed login (reason wrong_code) and a try of the challenge.
type ResetPasswordHandler struct{ LifecycleDeps }

// Reset is the outcome of a reset.
type Reset struct {
	UserID  string
	Revoked int
	Seq     uint64
}

func (h ResetPasswordHandler) Handle(ctx context.Context, r ResetRequest) (Reset, error) {
	if err := domain.ValidatePassword(r.NewPassword); err != nil {
		return Reset{}, err
	}
	var hash string
	var out Reset
	seq, err := h.answer(ctx, domain.PurposePasswordReset, r.CodeAnswer, func() (err error) {
		hash, err = h.Hasher.Hash(r.NewPassword)
		return err
	}, func(u *domain.User, c domain.Challenge, via string, at time.Time) ([]domain.Event, error) {
		out.UserID, out.Revoked = u.ID(), u.LiveSessions(at)
		return []domain.Event{u.ResetPassword(c, via, hash, at)}, nil
	})
	if err != nil {
		return Reset{}, err
	}
	out.Seq = seq
	return out, nil
}

// CodeLogin is an emailed code or link exchanged for a session.
type CodeLogin struct {
	CodeAnswer
	KeepLoggedIn bool
}

// CodeLoginHandler logs in with an emailed code (method email_code) or
// magic link (method magic_link). Failures are a wrong password's.
type CodeLoginHandler struct{ LifecycleDeps }

func (h CodeLoginHandler) Handle(ctx context.Context, l CodeLogin) (Issued, error) {
	raw, sid, tokenHash, err := domain.NewToken(h.rand())
	if err != nil {
		return Issued{}, err
	}
	issued := Issued{Token: raw, SessionID: sid, ExpiresIn: h.Policy.MaxLifetime(l.KeepLoggedIn, false)}
	seq, err := h.answer(ctx, domain.PurposeLogin, l.CodeAnswer, nil, func(u *domain.User, c domain.Challenge, via string, at time.Time) ([]domain.Event, error) {
		issued.UserID = u.ID()
		return u.LoginWithCode(c, via, sid, tokenHash, l.KeepLoggedIn, at, h.Policy), nil
	})
	if err != nil {
		return Issued{}, err
	}
	issued.Seq = seq
	return issued, nil
}

// ErrLifecycleUnavailable: the lifecycle commands were not wired (an API
// built without them, as some tests build it).
var ErrLifecycleUnavailable = errors.New("account lifecycle commands are not configured")

// Configured reports whether the handlers were built by NewLifecycle.
func (h LifecycleHandlers) Configured() bool { return h.ChangePassword.Users != nil }
