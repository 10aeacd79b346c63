package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// SignupHandler registers an account and logs it in.
//
// Email uniqueness must hold across every instance sharing the stream, so a
// signup first claims the email on its own subject (appended only if the
// subject is empty). Whoever loses the claim race learns the claimed user id
// and competes for that user's first event, also appended only if empty:
// exactly one user_registered per email can ever land, and a claim orphaned
// by a crash is completed by the next signup for that email.
type SignupHandler struct{ Deps }

func (h SignupHandler) Handle(ctx context.Context, c Credentials) (Issued, error) {
	email, err := domain.NormalizeEmail(c.Email)
	if err != nil {
		return Issued{}, err
	}
	if err := domain.ValidatePassword(c.Password); err != nil {
		return Issued{}, err
	}
	// Hash first, taken or not: a taken email must cost what a new one
	// does, or the answer's timing tells which emails are registered
	// before the 409 does (the 409 itself is inherent to signup; see
	// README, Enumeration).
	hash, err := h.Hasher.Hash(c.Password)
	if err != nil {
		return Issued{}, err
	}
	if _, _, err := h.Creds.Credentials(email); err == nil {
		return Issued{}, domain.ErrEmailTaken
	}
	userID, err := h.claim(ctx, email)
	if err != nil {
		return Issued{}, err
	}
	// The email reaches the log only sealed under the user's own data
	// key (and as its hash), so that erasing the user makes it unreadable.
	sealed, err := h.Secrets.Seal(ctx, userID, SecretEmail, []byte(email))
	if errors.Is(err, ports.ErrErased) {
		// The claim names a user erased since (a claim this signup lost
		// to a moment ago): the email is free again; try once more.
		return Issued{}, fmt.Errorf("signup: %w", domain.ErrEmailTaken)
	}
	if err != nil {
		return Issued{}, fmt.Errorf("seal email: %w", err)
	}
	var issued Issued
	seq, err := h.Users.Create(ctx, userID, func(at time.Time) ([]domain.Event, error) {
		reg, err := domain.Register(userID, email, sealed, hash, at)
		if err != nil {
			return nil, err
		}
		started, is, err := h.newSession(domain.NewUser(userID, email, hash, nil), c.KeepLoggedIn, at)
		issued = is
		return append([]domain.Event{reg}, started...), err
	})
	if errors.Is(err, errUserExists) {
		return Issued{}, domain.ErrEmailTaken
	}
	if err != nil {
		return Issued{}, err
	}
	issued.Seq = seq
	return issued, nil
}

// SecretEmail is the purpose the email is sealed under (ports.Secrets).
const SecretEmail = "email"

// claim appends a claim on the email's subject, expecting no authentic
// claim there, and returns the user id the email belongs to: ours, or that
// of whoever claimed it first. Only an authentic claim counts: a message
// someone without the signing key put on the subject makes the first append
// conflict, and is then passed over. A claim whose user was erased does
// not count either (ClaimedUser no longer reports it): the new claim is
// appended at the subject's current version, after the old ones.
func (h SignupHandler) claim(ctx context.Context, email string) (string, error) {
	emailHash := domain.EmailHash(email)
	userID := h.NewID()
	var v ports.Version
	for attempt := 1; ; attempt++ {
		_, err := h.Log.AppendEmailClaim(ctx, emailHash, v, domain.ClaimEmail(userID, email, h.Now()))
		if err == nil {
			return userID, nil
		}
		if !errors.Is(err, ports.ErrConflict) || attempt == 5 {
			return "", err
		}
		if v, err = h.Log.EmailVersion(ctx, emailHash); err != nil {
			return "", err
		}
		claimed, err := h.Creds.ClaimedUser(emailHash)
		if err == nil {
			return claimed, nil
		}
		if !errors.Is(err, domain.ErrUserNotFound) {
			return "", err
		}
	}
}

// account is where every credential exchange starts: the account of an
// email, if it exists and is not throttled. An unknown (or malformed)
// email is answered as a wrong credential would be, after burn spends what
// checking one costs, and is throttled alike (UnknownEmails); a throttled
// account is refused before any check. It returns the normalized email,
// the user and its password hash.
func (d Deps) account(rawEmail string, burn func() error) (email, userID, passwordHash string, err error) {
	if email, userID, passwordHash, err = d.lookup(rawEmail, burn); err != nil {
		return "", "", "", err
	}
	return email, userID, passwordHash, d.notThrottled(userID)
}

// lookup is account without the throttle check: the account of an email,
// or the answer an unknown email gets (see account).
func (d Deps) lookup(rawEmail string, burn func() error) (email, userID, passwordHash string, err error) {
	email, emailErr := domain.NormalizeEmail(rawEmail)
	if emailErr != nil {
		email = rawEmail
	}
	userID, passwordHash, err = d.Creds.Credentials(email)
	if emailErr != nil || errors.Is(err, domain.ErrUserNotFound) {
		return "", "", "", d.Unknown.attempt(email, burn)
	}
	if err != nil {
		return "", "", "", err
	}
	return email, userID, passwordHash, nil
}

// notThrottled refuses a throttled account before any check.
func (d Deps) notThrottled(userID string) error {
	failures, err := d.Creds.LoginFailures(userID)
	if err != nil {
		return err
	}
	now := d.Now()
	if until, throttled := failures.ThrottledAt(now); throttled {
		return domain.Throttled(until, now)
	}
	return nil
}

// LoginHandler checks a password and starts a session.
//
// Guessing is throttled per account (domain.LoginThrottle): a throttled
// account is refused before its password is checked, so the guesser costs
// neither a hash nor an event, and its existing sessions are untouched.
// Logins for unknown emails are throttled and answered alike (see
// UnknownEmails), so neither the answer nor its timing says whether an
// account exists.
type LoginHandler struct{ Deps }

func (h LoginHandler) Handle(ctx context.Context, c Credentials) (Issued, error) {
	email, userID, hash, err := h.account(c.Email, func() error { return h.Hasher.Burn(c.Password) })
	if err != nil {
		return Issued{}, err
	}
	ok, err := h.Hasher.Verify(c.Password, hash)
	if err != nil {
		return Issued{}, err
	}
	if !ok {
		_, err := h.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
			return u.FailLogin(email, at, h.Throttle), nil
		})
		if err != nil {
			return Issued{}, fmt.Errorf("record failed login: %w", err)
		}
		return Issued{}, domain.ErrInvalidCredentials
	}
	// A user with a second factor gets a ticket to redeem with a code
	// (MFA_REQUIRED), or, with the code in the login, an MFA session.
	ticket, ticketHash, err := domain.NewMFATicket(h.rand(), userID)
	if err != nil {
		return Issued{}, err
	}
	var issued Issued
	second := false
	seq, err := h.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		second = u.MFA().Enrolled()
		if second && c.TOTPCode == nil {
			return []domain.Event{u.ChallengeMFA(ticketHash, c.KeepLoggedIn, at)}, nil
		}
		if second {
			return nil, nil // decided below, on the second factor
		}
		started, is, err := h.newSession(u, c.KeepLoggedIn, at)
		issued = is
		return started, err
	})
	switch {
	case err == nil && second && c.TOTPCode == nil:
		return Issued{}, &domain.MFARequiredError{Ticket: ticket, ExpiresIn: domain.MFATicketTTL}
	case err == nil && second:
		return h.secondFactor(ctx, userID, domain.MFALogin{KeepLoggedIn: c.KeepLoggedIn}, c.TOTPCode, nil)
	}
	if errors.Is(err, domain.ErrUserNotFound) {
		// The credentials were found a moment ago: not the caller's fault.
		return Issued{}, fmt.Errorf("login: user %s has credentials but no history", userID)
	}
	if err != nil {
		return Issued{}, err
	}
	issued.Seq = seq
	return issued, nil
}
