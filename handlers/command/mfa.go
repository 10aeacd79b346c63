package command

import (
	"context"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/sessionledger/ledger/domain"
)

// The second factor (domain/mfa.go): TOTP (RFC 6238) with
// github.com/pquerna/otp, and recovery codes. The TOTP secret is sealed
// with ports.Secrets (purpose SecretPurposeTOTP) before it goes into an
// event, and opened only to check a code; it is never in the log, the data
// dir or the logs in clear.

// SecretPurposeTOTP is the ports.Secrets purpose of a TOTP secret.
const SecretPurposeTOTP = "totp"

// DefaultTOTPIssuer names the ledger in authenticator apps.
const DefaultTOTPIssuer = "Session Ledger"

// totpSecretBytes is RFC 4226's recommended 160 bits.
const totpSecretBytes = 20

var totpOpts = totp.ValidateOpts{Period: domain.TOTPStepSeconds, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// totpCheck is the domain's TOTPCheck for a code against a secret: the
// code of a step is computed with pquerna/otp and compared in constant
// time. A code that is not six digits matches no step.
func totpCheck(secret []byte, code string) domain.TOTPCheck {
	valid := len(code) == 6
	for _, c := range code {
		valid = valid && c >= '0' && c <= '9'
	}
	enc := b32.EncodeToString(secret)
	return func(step int64) bool {
		if !valid || step < 0 {
			return false
		}
		want, err := totp.GenerateCodeCustom(enc, time.Unix(step*domain.TOTPStepSeconds, 0).UTC(), totpOpts)
		return err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1
	}
}

// openTOTP opens a sealed TOTP secret of the user, once per sealed text
// for a handler call (decide may run more than once).
type openTOTP struct {
	d      Deps
	userID string
	sealed string
	secret []byte
}

func (o *openTOTP) check(ctx context.Context, sealed, code string) (domain.TOTPCheck, error) {
	if o.sealed != sealed || o.secret == nil {
		secret, err := o.d.Secrets.Open(ctx, o.userID, SecretPurposeTOTP, sealed)
		if err != nil {
			return nil, fmt.Errorf("open the TOTP secret: %w", err)
		}
		o.sealed, o.secret = sealed, secret
	}
	return totpCheck(o.secret, code), nil
}

// MFAEnrolment is a pending enrolment as handed to its user: the only
// moment the secret exists in clear outside the user's authenticator.
type MFAEnrolment struct {
	OTPAuthURI string
	Secret     string // base32, without padding
	Seq        uint64
}

// StartMFAHandler starts (or restarts) the enrolment of a TOTP secret for
// the caller's user.
type StartMFAHandler struct{ Deps }

func (h StartMFAHandler) Handle(ctx context.Context, caller SessionRef) (MFAEnrolment, error) {
	secret := make([]byte, totpSecretBytes)
	if _, err := io.ReadFull(h.rand(), secret); err != nil {
		return MFAEnrolment{}, err
	}
	sealed, err := h.Secrets.Seal(ctx, caller.UserID, SecretPurposeTOTP, secret)
	if err != nil {
		return MFAEnrolment{}, fmt.Errorf("seal the TOTP secret: %w", err)
	}
	var out MFAEnrolment
	seq, err := h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, err := u.StartMFAEnrolment(caller.SessionID, sealed, at)
		if err != nil {
			return nil, err
		}
		key, err := totp.Generate(totp.GenerateOpts{
			Issuer: h.issuer(), AccountName: u.ID(), Period: domain.TOTPStepSeconds, // the email is sealed
			Secret: secret, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
		})
		if err != nil {
			return nil, err
		}
		out = MFAEnrolment{OTPAuthURI: key.URL(), Secret: key.Secret()}
		return []domain.Event{e}, nil
	})
	if err != nil {
		return MFAEnrolment{}, err
	}
	out.Seq = seq
	return out, nil
}

func (d Deps) issuer() string {
	if d.TOTPIssuer != "" {
		return d.TOTPIssuer
	}
	return DefaultTOTPIssuer
}

// MFAConfirmed is an enrolment put in force: the recovery codes, shown
// this once.
type MFAConfirmed struct {
	RecoveryCodes []string
	Seq           uint64
}

// ConfirmMFAHandler puts the pending enrolment in force with a code of it.
type ConfirmMFAHandler struct{ Deps }

func (h ConfirmMFAHandler) Handle(ctx context.Context, caller SessionRef, code string) (MFAConfirmed, error) {
	codes, hashes, err := domain.NewRecoveryCodes(h.rand(), domain.RecoveryCodeCount)
	if err != nil {
		return MFAConfirmed{}, err
	}
	opener := &openTOTP{d: h.Deps, userID: caller.UserID}
	seq, err := h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		var check domain.TOTPCheck
		if pending := u.MFA().Pending; pending != "" && !u.MFA().Enrolled() {
			var err error
			if check, err = opener.check(ctx, pending, code); err != nil {
				return nil, err
			}
		}
		e, err := u.ConfirmMFA(caller.SessionID, check, hashes, at)
		if err != nil {
			return nil, err
		}
		return []domain.Event{e}, nil
	})
	if err != nil {
		return MFAConfirmed{}, err
	}
	return MFAConfirmed{RecoveryCodes: codes, Seq: seq}, nil
}

// DisableMFAHandler turns the caller's second factor off with a current
// code. A wrong code is a failed attempt that counts towards the login
// throttle; a throttled account is refused before the code is checked.
type DisableMFAHandler struct{ Deps }

func (h DisableMFAHandler) Handle(ctx context.Context, caller SessionRef, code string) (uint64, error) {
	opener := &openTOTP{d: h.Deps, userID: caller.UserID}
	ok := false
	seq, err := h.Users.UpdateSessions(ctx, caller.UserID, []string{caller.SessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		if until, throttled := u.Failures().ThrottledAt(at); throttled {
			return nil, domain.Throttled(until, at)
		}
		var check domain.TOTPCheck
		if u.MFA().Enrolled() {
			var err error
			if check, err = opener.check(ctx, u.MFA().Secret, code); err != nil {
				return nil, err
			}
		}
		events, accepted, err := u.DisableMFA(caller.SessionID, check, at, h.Throttle)
		ok = accepted
		return events, err
	})
	switch {
	case err != nil:
		return 0, err
	case !ok:
		return 0, domain.ErrMFACodeInvalid
	}
	return seq, nil
}

// MFACredentials are what the second step of a login takes: the ticket of
// MFA_REQUIRED and a TOTP code or a recovery code (exactly one).
type MFACredentials struct {
	Ticket       string
	Code         *string
	RecoveryCode *string
}

// MFALoginHandler redeems a login ticket with a second factor for an MFA
// session (aal2): 30 days with keep_logged_in, 24 h without (the policy's
// MFA lifetimes).
type MFALoginHandler struct{ Deps }

func (h MFALoginHandler) Handle(ctx context.Context, c MFACredentials) (Issued, error) {
	userID, ticket, err := domain.ParseMFATicket(c.Ticket)
	if err != nil {
		return Issued{}, domain.ErrMFATicketInvalid
	}
	if (c.Code == nil) == (c.RecoveryCode == nil) {
		return Issued{}, domain.ErrMFACodeInvalid
	}
	return h.secondFactor(ctx, userID, domain.MFALogin{Ticket: &ticket}, c.Code, c.RecoveryCode)
}

// secondFactor decides a login's second factor on the user's history and
// starts the MFA session it admits.
func (d Deps) secondFactor(ctx context.Context, userID string, l domain.MFALogin, code, recovery *string) (Issued, error) {
	raw, sid, tokenHash, err := domain.NewToken(d.rand())
	if err != nil {
		return Issued{}, err
	}
	l.SessionID, l.TokenHash = sid, tokenHash
	if recovery != nil {
		l.RecoveryCode = domain.HashRecoveryCode(*recovery)
	}
	opener := &openTOTP{d: d, userID: userID}
	var ok, keep bool
	seq, err := d.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		ok = false
		if until, throttled := u.Failures().ThrottledAt(at); throttled {
			return nil, domain.Throttled(until, at)
		}
		if !u.MFA().Enrolled() {
			return nil, domain.ErrMFATicketInvalid // disabled since the ticket was given
		}
		attempt := l
		if code != nil {
			check, err := opener.check(ctx, u.MFA().Secret, *code)
			if err != nil {
				return nil, err
			}
			attempt.TOTP = check
		}
		events, k, accepted, err := u.LoginWithSecondFactor(attempt, at, d.Policy, d.Throttle)
		ok, keep = accepted, k
		return events, err
	})
	switch {
	case errors.Is(err, domain.ErrUserNotFound):
		return Issued{}, domain.ErrMFATicketInvalid
	case err != nil:
		return Issued{}, err
	case !ok:
		return Issued{}, domain.ErrMFACodeInvalid
	}
	return Issued{Token: raw, UserID: userID, SessionID: sid, ExpiresIn: d.Policy.MaxLifetime(keep, true), Seq: seq}, nil
}
