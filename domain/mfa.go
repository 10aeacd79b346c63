package domain

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// A second factor: TOTP (RFC 6238, 30-second steps, 6 digits) and ten
// single-use recovery codes. The domain decides from what the log says (the
// sealed secret, the last time step used, the unused recovery codes, the
// login tickets still open) and never sees the secret in clear: the
// application opens it and hands the decision a TOTPCheck, which says
// whether the presented code is the one of a given step. The ±1 step
// window and the replay rule (a step is accepted once, and never one at or
// before the last step used) are decided here, so they hold on every
// instance that has folded the log.

// MFA event types (on the user's subject).
const (
	EventMFAEnrolmentStarted EventType = "mfa_enrolment_started"
	EventMFAEnrolled         EventType = "mfa_enrolled"
	EventMFADisabled         EventType = "mfa_disabled"
	EventMFAChallenged       EventType = "mfa_challenged"
	EventMFAVerified         EventType = "mfa_verified"
	EventRecoveryCodeUsed    EventType = "recovery_code_used"
	EventMFAFailed           EventType = "mfa_failed"
)

// mfa_failed reasons; both count towards the login throttle.
const (
	MFAFailedWrongTOTP         = "wrong_totp"
	MFAFailedWrongRecoveryCode = "wrong_recovery_code"
)

// MFA methods (mfa_verified's method, recovery_code_used implies
// recovery_code).
const (
	MFAMethodTOTP         = "totp"
	MFAMethodRecoveryCode = "recovery_code"
)

// TOTPStepSeconds is RFC 6238's default time step.
const TOTPStepSeconds = 30

// RecoveryCodeCount is how many recovery codes an enrolment gives.
const RecoveryCodeCount = 10

// MFATicketTTL is how long a login ticket (MFA_REQUIRED) may be redeemed.
const MFATicketTTL = 5 * time.Minute

// maxOpenTickets bounds the tickets a user's state holds: beyond, the
// oldest is dropped, so the state stays bounded whatever the logins.
const maxOpenTickets = 10

// Payloads of the MFA events. Field names are part of the documented
// schema.
type (
	MFAEnrolmentStarted struct {
		// SealedSecret is the TOTP secret sealed with ports.Secrets
		// (purpose "totp") under the user's data key.
		SealedSecret string `json:"sealed_secret"`
		BySessionID  string `json:"by_session_id"`
	}
	MFAEnrolled struct {
		SealedSecret string `json:"sealed_secret"`
		// RecoveryCodeHashes are sha256: of the ten recovery codes.
		RecoveryCodeHashes []string `json:"recovery_code_hashes"`
		// Step is the time step of the code that confirmed it: it is
		// used, and so is every one before it.
		Step        int64  `json:"step"`
		BySessionID string `json:"by_session_id"`
	}
	MFADisabled struct {
		Step        int64  `json:"step"`
		BySessionID string `json:"by_session_id"`
	}
	MFAChallenged struct {
		TicketHash   string    `json:"ticket_hash"`
		ExpiresAt    time.Time `json:"expires_at"`
		KeepLoggedIn bool      `json:"keep_logged_in"`
	}
	// MFAVerified: a TOTP code let a session in; session_id is that
	// session, whose session_started follows in the same write.
	MFAVerified struct {
		Method     string `json:"method"`
		Step       int64  `json:"step"`
		TicketHash string `json:"ticket_hash,omitempty"` // absent for a code sent with the password
	}
	RecoveryCodeUsed struct {
		CodeHash   string `json:"code_hash"`
		TicketHash string `json:"ticket_hash,omitempty"`
	}
	MFAFailed struct {
		Reason     string `json:"reason"`
		InARow     int    `json:"in_a_row"`
		TicketHash string `json:"ticket_hash,omitempty"`
	}
)

// MFA errors.
var (
	ErrMFARequired       = errors.New("a second factor is required")
	ErrMFACodeInvalid    = errors.New("the code is not valid")
	ErrMFATicketInvalid  = errors.New("the mfa ticket is not valid")
	ErrMFAAlreadyEnabled = errors.New("a second factor is already enabled")
	ErrMFANotEnabled     = errors.New("no second factor is enabled")
	ErrMFANotPending     = errors.New("no enrolment is pending")
)

// MFARequiredError is a login that needs its second factor: the ticket to
// redeem with a code (shown once, stored only as a hash).
type MFARequiredError struct {
	Ticket    string
	ExpiresIn time.Duration
}

func (e *MFARequiredError) Error() string { return ErrMFARequired.Error() }
func (e *MFARequiredError) Unwrap() error { return ErrMFARequired }

// TOTPCheck says whether the presented code is the one of a time step. The
// application builds it from the opened secret (pquerna/otp); the domain
// decides which steps may be tried.
type TOTPCheck func(step int64) bool

// TOTPStep is the RFC 6238 time step of an instant.
func TOTPStep(at time.Time) int64 {
	u := at.Unix()
	if u < 0 {
		return 0
	}
	return u / TOTPStepSeconds
}

// MFATicket is an open login ticket: redeemable until ExpiresAt, once.
type MFATicket struct {
	Hash         string    `json:"hash"`
	ExpiresAt    time.Time `json:"expires_at"`
	KeepLoggedIn bool      `json:"keep_logged_in"`
}

// MFA is a user's second factor as folded from its events.
type MFA struct {
	Pending    string      `json:"pending,omitempty"` // sealed secret of a pending enrolment
	Secret     string      `json:"secret,omitempty"`  // sealed secret in force
	EnrolledAt time.Time   `json:"enrolled_at,omitzero"`
	LastStep   int64       `json:"last_step,omitempty"`
	Recovery   []string    `json:"recovery,omitempty"` // hashes of the unused recovery codes
	Tickets    []MFATicket `json:"tickets,omitempty"`
}

// Enrolled reports whether a second factor is in force.
func (m MFA) Enrolled() bool { return m.Secret != "" }

// IsZero reports whether there is nothing to remember.
func (m MFA) IsZero() bool {
	return m.Pending == "" && m.Secret == "" && m.LastStep == 0 && len(m.Recovery) == 0 && len(m.Tickets) == 0 && m.EnrolledAt.IsZero()
}

// Apply folds one event of the user into its second factor.
func (m MFA) Apply(e Event) (MFA, error) {
	switch e.Type {
	case EventMFAEnrolmentStarted:
		p, err := DecodePayload[MFAEnrolmentStarted](e)
		if err != nil {
			return m, err
		}
		if p.SealedSecret == "" {
			return m, fmt.Errorf("event %s: mfa_enrolment_started without a secret", e.ID)
		}
		m.Pending = p.SealedSecret
	case EventMFAEnrolled:
		p, err := DecodePayload[MFAEnrolled](e)
		if err != nil {
			return m, err
		}
		if p.SealedSecret == "" {
			return m, fmt.Errorf("event %s: mfa_enrolled without a secret", e.ID)
		}
		m.Pending, m.Secret, m.EnrolledAt = "", p.SealedSecret, e.Time.UTC()
		m.Recovery = slices.Clone(p.RecoveryCodeHashes)
		m.LastStep = max(m.LastStep, p.Step)
	case EventMFADisabled:
		p, err := DecodePayload[MFADisabled](e)
		if err != nil {
			return m, err
		}
		m = MFA{LastStep: max(m.LastStep, p.Step)}
	case EventMFAChallenged:
		p, err := DecodePayload[MFAChallenged](e)
		if err != nil {
			return m, err
		}
		m.Tickets = append(m.openTickets(e.Time), MFATicket{Hash: p.TicketHash, ExpiresAt: p.ExpiresAt.UTC(), KeepLoggedIn: p.KeepLoggedIn})
		if n := len(m.Tickets); n > maxOpenTickets {
			m.Tickets = slices.Clone(m.Tickets[n-maxOpenTickets:])
		}
	case EventMFAVerified:
		p, err := DecodePayload[MFAVerified](e)
		if err != nil {
			return m, err
		}
		m.LastStep = max(m.LastStep, p.Step)
		m.Tickets = m.without(p.TicketHash, e.Time)
	case EventRecoveryCodeUsed:
		p, err := DecodePayload[RecoveryCodeUsed](e)
		if err != nil {
			return m, err
		}
		m.Recovery = slices.DeleteFunc(slices.Clone(m.Recovery), func(h string) bool { return h == p.CodeHash })
		m.Tickets = m.without(p.TicketHash, e.Time)
	}
	if len(m.Tickets) == 0 {
		m.Tickets = nil
	}
	if len(m.Recovery) == 0 {
		m.Recovery = nil
	}
	return m, nil
}

// openTickets are the tickets not expired at `at`.
func (m MFA) openTickets(at time.Time) []MFATicket {
	var out []MFATicket
	for _, t := range m.Tickets {
		if at.Before(t.ExpiresAt) {
			out = append(out, t)
		}
	}
	return out
}

func (m MFA) without(hash string, at time.Time) []MFATicket {
	return slices.DeleteFunc(m.openTickets(at), func(t MFATicket) bool { return hash != "" && t.Hash == hash })
}

// ticket finds an open ticket by hash, compared in constant time.
func (m MFA) ticket(hash TokenHash, at time.Time) (MFATicket, bool) {
	var found MFATicket
	ok := false
	for _, t := range m.openTickets(at) {
		if subtle.ConstantTimeCompare([]byte(t.Hash), []byte(hash.String())) == 1 {
			found, ok = t, true
		}
	}
	return found, ok
}

// match is the step the code is the one of: within ±1 step of `at`, and
// after the last step used. Every candidate is checked, whatever matched.
func (m MFA) match(check TOTPCheck, at time.Time) (int64, bool) {
	if check == nil {
		return 0, false
	}
	cur := TOTPStep(at)
	var step int64
	ok := false
	for _, s := range []int64{cur - 1, cur, cur + 1} {
		if check(s) && s > m.LastStep && !ok {
			step, ok = s, true
		}
	}
	return step, ok
}

// MFA is the user's second factor.
func (u *User) MFA() MFA { return u.mfa }

// WithMFA is the user with its second factor, as stored by a projection.
func (u *User) WithMFA(m MFA) *User {
	c := *u
	c.mfa = m
	return &c
}

// StartMFAEnrolment decides a pending enrolment of a TOTP secret (sealed
// by the application), on behalf of the caller's live session. A pending
// one before it is replaced.
func (u *User) StartMFAEnrolment(callerSessionID, sealedSecret string, at time.Time) (Event, error) {
	if err := u.requireLive(callerSessionID, at); err != nil {
		return Event{}, err
	}
	if u.mfa.Enrolled() {
		return Event{}, ErrMFAAlreadyEnabled
	}
	return newEvent(EventMFAEnrolmentStarted, u.id, "", at, MFAEnrolmentStarted{SealedSecret: sealedSecret, BySessionID: callerSessionID}), nil
}

// ConfirmMFA puts the pending enrolment in force if check accepts a code
// of it (see match), with the hashes of the recovery codes the user is
// shown once. A wrong code changes nothing (the enrolment is not an
// authentication: the caller holds a live session).
func (u *User) ConfirmMFA(callerSessionID string, check TOTPCheck, recoveryHashes []TokenHash, at time.Time) (Event, error) {
	if err := u.requireLive(callerSessionID, at); err != nil {
		return Event{}, err
	}
	if u.mfa.Enrolled() {
		return Event{}, ErrMFAAlreadyEnabled
	}
	if u.mfa.Pending == "" {
		return Event{}, ErrMFANotPending
	}
	step, ok := u.mfa.match(check, at)
	if !ok {
		return Event{}, ErrMFACodeInvalid
	}
	hashes := make([]string, len(recoveryHashes))
	for i, h := range recoveryHashes {
		hashes[i] = h.String()
	}
	return newEvent(EventMFAEnrolled, u.id, "", at, MFAEnrolled{
		SealedSecret: u.mfa.Pending, RecoveryCodeHashes: hashes, Step: step, BySessionID: callerSessionID,
	}), nil
}

// DisableMFA turns the second factor off if check accepts a current code;
// a wrong one is a failed attempt (mfa_failed, and login_throttled if it
// throttles the account), and ok is false.
func (u *User) DisableMFA(callerSessionID string, check TOTPCheck, at time.Time, r LoginThrottle) (events []Event, ok bool, err error) {
	if err := u.requireLive(callerSessionID, at); err != nil {
		return nil, false, err
	}
	if !u.mfa.Enrolled() {
		return nil, false, ErrMFANotEnabled
	}
	step, ok := u.mfa.match(check, at)
	if !ok {
		return u.failMFA(MFAFailedWrongTOTP, "", at, r), false, nil
	}
	return []Event{newEvent(EventMFADisabled, u.id, "", at, MFADisabled{Step: step, BySessionID: callerSessionID})}, true, nil
}

// ChallengeMFA decides a login ticket: the password was right, the second
// factor is still to come (MFATicketTTL, once).
func (u *User) ChallengeMFA(ticketHash TokenHash, keepLoggedIn bool, at time.Time) Event {
	return newEvent(EventMFAChallenged, u.id, "", at, MFAChallenged{
		TicketHash: ticketHash.String(), ExpiresAt: at.Add(MFATicketTTL).UTC(), KeepLoggedIn: keepLoggedIn,
	})
}

// MFALogin is a second factor presented to start a session: with a ticket
// (Ticket set; its keep_logged_in is the login's) or along with the
// password (KeepLoggedIn is then the login's). TOTP is set for a code,
// otherwise RecoveryCode is the hash of a recovery code.
type MFALogin struct {
	Ticket       *TokenHash
	KeepLoggedIn bool
	TOTP         TOTPCheck
	RecoveryCode TokenHash
	SessionID    string
	TokenHash    TokenHash
}

// LoginWithSecondFactor decides a login's second factor. A ticket that is
// not open is ErrMFATicketInvalid (nothing appended). A code accepted (see
// match), or an unused recovery code, starts an MFA session (mfa_verified or
// recovery_code_used, with the new session's id, then the evictions and
// session_started of Login); keep is whether it keeps the user logged in.
// Otherwise ok is false and the events are a failed attempt that counts
// towards the login throttle.
func (u *User) LoginWithSecondFactor(l MFALogin, at time.Time, p Policy, r LoginThrottle) (events []Event, keep, ok bool, err error) {
	if !u.mfa.Enrolled() {
		return nil, false, false, ErrMFANotEnabled
	}
	keep = l.KeepLoggedIn
	ticketHash := ""
	if l.Ticket != nil {
		t, found := u.mfa.ticket(*l.Ticket, at)
		if !found {
			return nil, false, false, ErrMFATicketInvalid
		}
		keep, ticketHash = t.KeepLoggedIn, t.Hash
	}
	var proof Event
	if l.TOTP != nil {
		step, match := u.mfa.match(l.TOTP, at)
		if !match {
			return u.failMFA(MFAFailedWrongTOTP, ticketHash, at, r), keep, false, nil
		}
		proof = newEvent(EventMFAVerified, u.id, l.SessionID, at, MFAVerified{Method: MFAMethodTOTP, Step: step, TicketHash: ticketHash})
	} else {
		found := false
		for _, h := range u.mfa.Recovery {
			if subtle.ConstantTimeCompare([]byte(h), []byte(l.RecoveryCode.String())) == 1 {
				found = true
			}
		}
		if !found {
			return u.failMFA(MFAFailedWrongRecoveryCode, ticketHash, at, r), keep, false, nil
		}
		proof = newEvent(EventRecoveryCodeUsed, u.id, l.SessionID, at, RecoveryCodeUsed{CodeHash: l.RecoveryCode.String(), TicketHash: ticketHash})
	}
	return append([]Event{proof}, u.Login(l.SessionID, l.TokenHash, SessionMethodPassword, keep, true, at, p)...), keep, true, nil
}

// failMFA decides a wrong second factor: mfa_failed, and login_throttled
// if it throttles the account (the same count as wrong passwords).
func (u *User) failMFA(reason, ticketHash string, at time.Time, r LoginThrottle) []Event {
	next, throttled := r.Fail(u.failures, at)
	events := []Event{newEvent(EventMFAFailed, u.id, "", at, MFAFailed{Reason: reason, InARow: next.InARow, TicketHash: ticketHash})}
	if throttled {
		events = append(events, newEvent(EventLoginThrottled, u.id, "", at, LoginThrottled{
			Until: next.Until, Level: next.Level, InARow: next.InARow,
		}))
	}
	return events
}

// Recovery codes: 16 characters of the RFC 4648 base32 alphabet in lower
// case (80 random bits), shown as four groups of four ("abcd-efgh-ijkl-
// mnop"). Drawn at random with 80 bits, they need no slow hash: SHA-256 of
// the normalized code (lower case, without dashes or spaces) is stored.
const recoveryAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

// NewRecoveryCodes draws n codes from rand and returns them and their hashes.
func NewRecoveryCodes(rand io.Reader, n int) (codes []string, hashes []TokenHash, err error) {
	buf := make([]byte, 16)
	for range n {
		if _, err := io.ReadFull(rand, buf); err != nil {
			return nil, nil, fmt.Errorf("recovery codes: %w", err)
		}
		var b strings.Builder
		for i, c := range buf {
			if i > 0 && i%4 == 0 {
				b.WriteByte('-')
			}
			b.WriteByte(recoveryAlphabet[c%32]) // 256 is a multiple of 32: uniform
		}
		code := b.String()
		codes = append(codes, code)
		hashes = append(hashes, HashRecoveryCode(code))
	}
	return codes, hashes, nil
}

// HashRecoveryCode is the stored hash of a recovery code as typed: case,
// dashes and spaces do not matter.
func HashRecoveryCode(code string) TokenHash {
	n := strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ':
			return -1
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, code)
	return sha256.Sum256([]byte("sessionledger/recovery-code/v1\x00" + n))
}

// MFA tickets: "mft_" + the user id + "." + 43 base64url characters (256
// random bits). The user id tells which history to decide on; only
// SHA-256 of the secret part is stored.
const MFATicketPrefix = "mft_"

// NewMFATicket draws a ticket for a user.
func NewMFATicket(rand io.Reader, userID string) (raw string, hash TokenHash, err error) {
	var secret [secretBytes]byte
	if _, err := io.ReadFull(rand, secret[:]); err != nil {
		return "", hash, fmt.Errorf("mfa ticket: %w", err)
	}
	return MFATicketPrefix + userID + "." + base64.RawURLEncoding.EncodeToString(secret[:]), sha256.Sum256(secret[:]), nil
}

// ParseMFATicket splits a ticket into its user id and the hash of its secret.
func ParseMFATicket(raw string) (userID string, hash TokenHash, err error) {
	rest, ok := strings.CutPrefix(raw, MFATicketPrefix)
	if !ok || len(rest) > 200 {
		return "", hash, ErrMFATicketInvalid
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 1 {
		return "", hash, ErrMFATicketInvalid
	}
	var secret [secretBytes + 1]byte
	n, err := strictB64.Decode(secret[:], []byte(rest[i+1:]))
	if err != nil || n != secretBytes {
		return "", hash, ErrMFATicketInvalid
	}
	return rest[:i], sha256.Sum256(secret[:secretBytes]), nil
}
