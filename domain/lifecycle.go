package domain

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/crypto/hkdf"
)

// Account lifecycle: a user changes their password (knowing the current
// one), resets it through a code or link sent by email, or logs in with a
// one-time code or magic link sent by email.
//
// A code or link is a challenge: password_reset_requested or
// login_code_requested on the user's subject holds its id, when it
// expires, how many tries it allows, and only keyed hashes of the code and
// the link's secret. The raw code and link exist only in the message that
// delivers them. Every wrong answer is a login_failed (reason wrong_code)
// that names the challenge: it counts towards the challenge's tries and
// towards the account's login throttle, like a wrong password. The answer
// that succeeds (password_reset, login_code_used) uses the challenge up.

// Lifecycle event types (on the user's subject).
const (
	EventPasswordChanged        EventType = "password_changed"
	EventPasswordResetRequested EventType = "password_reset_requested"
	EventPasswordReset          EventType = "password_reset"
	EventLoginCodeRequested     EventType = "login_code_requested"
	EventLoginCodeUsed          EventType = "login_code_used"
)

// Revocation reasons of the lifecycle events.
const (
	// ReasonRevokedPasswordChanged: another session of a user who changed
	// their password (password_changed with revoke_other_sessions).
	ReasonRevokedPasswordChanged Reason = "revoked:password_changed"
	// ReasonRevokedPasswordReset: every session of a user whose password
	// was reset (password_reset).
	ReasonRevokedPasswordReset Reason = "revoked:password_reset"
)

// Session methods of a login by an emailed code or link.
const (
	SessionMethodEmailCode = "email_code"
	SessionMethodMagicLink = "magic_link"
)

// LoginFailedWrongCode is login_failed's reason for a wrong, expired, used
// or exhausted emailed code or link on a known account. It counts towards
// the same throttle as a wrong password.
const LoginFailedWrongCode = "wrong_code"

// Purpose is what a challenge is for.
type Purpose string

const (
	PurposePasswordReset Purpose = "password_reset"
	PurposeLogin         Purpose = "login"
)

// Via is how a challenge was answered.
const (
	ViaCode = "code"
	ViaLink = "link"
)

// Payloads of the lifecycle events. Field names are part of the documented
// schema.
type (
	PasswordChanged struct {
		PasswordHash        string `json:"password_hash"`
		RevokeOtherSessions bool   `json:"revoke_other_sessions"`
		BySessionID         string `json:"by_session_id"`
	}
	// ChallengeRequested is the payload of password_reset_requested and
	// login_code_requested.
	ChallengeRequested struct {
		ChallengeID string    `json:"challenge_id"`
		CodeHash    string    `json:"code_hash"` // hmac-sha256:<hex>, keyed (see ChallengeCodeHash)
		LinkHash    string    `json:"link_hash"` // sha256:<hex> of the link's secret
		KeyID       string    `json:"kid"`       // the signing key the code's hash key derives from
		ExpiresAt   time.Time `json:"expires_at"`
		MaxTries    int       `json:"max_tries"`
	}
	PasswordReset struct {
		ChallengeID  string `json:"challenge_id"`
		PasswordHash string `json:"password_hash"`
		Via          string `json:"via"`
	}
	LoginCodeUsed struct {
		ChallengeID string `json:"challenge_id"`
		Via         string `json:"via"`
	}
)

// ChallengeRules bound codes and links.
type ChallengeRules struct {
	ResetTTL     time.Duration // a password reset's code and link
	LoginTTL     time.Duration // a login code and magic link
	MaxTries     int           // wrong answers before a challenge is dead
	RequestEvery time.Duration // at most one challenge per purpose and account this often
}

// DefaultChallengeRules: a reset lives 10 minutes, a login code 5; 5 tries
// each; one request per account and purpose a minute.
func DefaultChallengeRules() ChallengeRules {
	return ChallengeRules{ResetTTL: 10 * time.Minute, LoginTTL: 5 * time.Minute, MaxTries: 5, RequestEvery: time.Minute}
}

// TTL is how long a challenge of purpose p lives.
func (r ChallengeRules) TTL(p Purpose) time.Duration {
	if p == PurposeLogin {
		return r.LoginTTL
	}
	return r.ResetTTL
}

// Lifecycle errors.
var (
	// ErrInvalidCode: a code or link that is wrong, expired, used up or
	// tried too often, or whose email has no account (the same answer).
	ErrInvalidCode = errors.New("the code or link is not valid")
	// ErrChallengeTooSoon: a challenge of this purpose was issued less
	// than ChallengeRules.RequestEvery ago.
	ErrChallengeTooSoon = errors.New("a code was sent a moment ago")
	// ErrPasswordMoved: the password changed between its check and the
	// decision.
	ErrPasswordMoved = errors.New("the password changed meanwhile")
)

// Challenge is a user's latest challenge of one purpose, as folded.
type Challenge struct {
	ID        string    `json:"id"`
	Purpose   Purpose   `json:"purpose"`
	CodeHash  string    `json:"code_hash"`
	LinkHash  string    `json:"link_hash"`
	KeyID     string    `json:"kid"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	MaxTries  int       `json:"max_tries"`
	Tries     int       `json:"tries"`
	Used      bool      `json:"used"`
}

// OpenAt reports whether the challenge may still be answered at `at`.
func (c Challenge) OpenAt(at time.Time) bool {
	return c.ID != "" && !c.Used && c.Tries < c.MaxTries && at.Before(c.ExpiresAt)
}

// PurposeOf is the purpose of a challenge's request event.
func PurposeOf(t EventType) (Purpose, bool) {
	switch t {
	case EventPasswordResetRequested:
		return PurposePasswordReset, true
	case EventLoginCodeRequested:
		return PurposeLogin, true
	}
	return "", false
}

// ChallengeFromEvent is a challenge's state from its request event.
func ChallengeFromEvent(e Event) (Challenge, error) {
	purpose, ok := PurposeOf(e.Type)
	if !ok {
		return Challenge{}, fmt.Errorf("challenge from %s event", e.Type)
	}
	p, err := DecodePayload[ChallengeRequested](e)
	if err != nil {
		return Challenge{}, err
	}
	if !IsSessionID(p.ChallengeID) || e.UserID == "" || p.MaxTries < 1 || !p.ExpiresAt.After(e.Time) {
		return Challenge{}, fmt.Errorf("event %s: incomplete %s", e.ID, e.Type)
	}
	if _, err := ParseTokenHash(p.LinkHash); err != nil {
		return Challenge{}, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return Challenge{ID: p.ChallengeID, Purpose: purpose, CodeHash: p.CodeHash, LinkHash: p.LinkHash, KeyID: p.KeyID,
		IssuedAt: e.Time, ExpiresAt: p.ExpiresAt.UTC(), MaxTries: p.MaxTries}, nil
}

// Apply folds one event of the user into the challenge: a wrong answer
// naming it is a try, the answer that succeeded uses it up. A new request
// of the same purpose replaces the challenge (see ChallengeFromEvent).
func (c Challenge) Apply(e Event) (Challenge, error) {
	switch e.Type {
	case EventLoginFailed:
		p, err := DecodePayload[LoginFailed](e)
		if err != nil {
			return c, err
		}
		if p.ChallengeID != "" && p.ChallengeID == c.ID {
			c.Tries++
		}
	case EventPasswordReset:
		p, err := DecodePayload[PasswordReset](e)
		if err != nil {
			return c, err
		}
		if p.ChallengeID == c.ID {
			c.Used = true
		}
	case EventLoginCodeUsed:
		p, err := DecodePayload[LoginCodeUsed](e)
		if err != nil {
			return c, err
		}
		if p.ChallengeID == c.ID {
			c.Used = true
		}
	}
	return c, nil
}

// FoldChallenges folds one event into a user's challenges (by purpose) and
// reports whether it changed them.
func FoldChallenges(cs map[Purpose]Challenge, e Event) (bool, error) {
	if _, ok := PurposeOf(e.Type); ok {
		c, err := ChallengeFromEvent(e)
		if err != nil {
			return false, err
		}
		cs[c.Purpose] = c
		return true, nil
	}
	changed := false
	for p, c := range cs {
		next, err := c.Apply(e)
		if err != nil {
			return false, err
		}
		if next != c {
			cs[p], changed = next, true
		}
	}
	return changed, nil
}

// WithChallenges is the user with its latest challenges, as stored by a
// projection.
func (u *User) WithChallenges(cs []Challenge) *User {
	c := *u
	c.challenges = make(map[Purpose]Challenge, len(cs))
	for _, ch := range cs {
		c.challenges[ch.Purpose] = ch
	}
	return &c
}

// Challenge is the user's latest challenge of purpose p.
func (u *User) Challenge(p Purpose) (Challenge, bool) {
	c, ok := u.challenges[p]
	return c, ok
}

// ChangePassword decides a new password hash for the user, on behalf of
// the caller's live session, whose password check passed against
// checkedHash. With revokeOthers every other session live at `at` is
// revoked by the same event (revoked:password_changed); revoked says how
// many.
func (u *User) ChangePassword(callerSessionID, checkedHash, newHash string, revokeOthers bool, at time.Time) (e Event, revoked int, err error) {
	if err := u.requireLive(callerSessionID, at); err != nil {
		return Event{}, 0, err
	}
	if checkedHash != u.passwordHash {
		return Event{}, 0, ErrPasswordMoved
	}
	if revokeOthers {
		for id, s := range u.sessions {
			if id != callerSessionID && s.live(at) {
				revoked++
			}
		}
	}
	return newEvent(EventPasswordChanged, u.id, callerSessionID, at, PasswordChanged{
		PasswordHash: newHash, RevokeOtherSessions: revokeOthers, BySessionID: callerSessionID,
	}), revoked, nil
}

// RequestChallenge decides a new challenge of purpose p. At most one is
// issued per purpose every r.RequestEvery (ErrChallengeTooSoon); a new one
// replaces the previous.
func (u *User) RequestChallenge(p Purpose, n NewChallengeSecrets, at time.Time, r ChallengeRules) (Event, error) {
	if prev, ok := u.challenges[p]; ok && at.Sub(prev.IssuedAt) < r.RequestEvery {
		return Event{}, ErrChallengeTooSoon
	}
	t := EventPasswordResetRequested
	if p == PurposeLogin {
		t = EventLoginCodeRequested
	}
	return newEvent(t, u.id, "", at, ChallengeRequested{
		ChallengeID: n.ID, CodeHash: n.CodeHash, LinkHash: n.LinkHash.String(), KeyID: n.KeyID,
		ExpiresAt: at.Add(r.TTL(p)).UTC(), MaxTries: max(r.MaxTries, 1),
	}), nil
}

// ChallengeAnswer is a presented code or link.
type ChallengeAnswer struct {
	Purpose Purpose
	Via     string // ViaCode or ViaLink
	Code    string // ViaCode
	// LinkID and LinkSecret come from ParseLinkToken (ViaLink).
	LinkID     string
	LinkSecret TokenHash
	// Key is the code hash key of a signing key id (ChallengeKey).
	Key       func(kid string) ([]byte, bool)
	EmailHash string // for login_failed
}

// AnswerChallenge checks an answer against the user's open challenge of
// its purpose (compared in constant time). ok: the challenge to use up
// (with ResetPassword or LoginWithCode, in the same decision). Otherwise
// the events are those of a failed login (reason wrong_code), naming the
// challenge if one was open, so it counts as a try, throttle included.
func (u *User) AnswerChallenge(a ChallengeAnswer, at time.Time, t LoginThrottle) (c Challenge, failed []Event, ok bool) {
	c, found := u.challenges[a.Purpose]
	open := found && c.OpenAt(at)
	match := false
	if open {
		switch a.Via {
		case ViaCode:
			if key, ok := a.Key(c.KeyID); ok && IsChallengeCode(a.Code) {
				match = subtle.ConstantTimeCompare([]byte(ChallengeCodeHash(key, c.ID, a.Code)), []byte(c.CodeHash)) == 1
			}
		case ViaLink:
			h, err := ParseTokenHash(c.LinkHash)
			match = err == nil && a.LinkID == c.ID && h.Equal(a.LinkSecret)
		}
	}
	if match {
		return c, nil, true
	}
	tried := ""
	if open && (a.Via == ViaCode || a.LinkID == c.ID) {
		tried = c.ID
	}
	next, throttled := t.Fail(u.failures, at)
	failed = []Event{newEvent(EventLoginFailed, u.id, "", at, LoginFailed{
		Reason: LoginFailedWrongCode, EmailHash: a.EmailHash, InARow: next.InARow, ChallengeID: tried,
	})}
	if throttled {
		failed = append(failed, newEvent(EventLoginThrottled, u.id, "", at, LoginThrottled{
			Until: next.Until, Level: next.Level, InARow: next.InARow,
		}))
	}
	return Challenge{}, failed, false
}

// ResetPassword decides the reset that answers challenge c (from
// AnswerChallenge): the new hash, and every session of the user revoked
// (revoked:password_reset).
func (u *User) ResetPassword(c Challenge, via, newHash string, at time.Time) Event {
	return newEvent(EventPasswordReset, u.id, "", at, PasswordReset{ChallengeID: c.ID, PasswordHash: newHash, Via: via})
}

// LoginWithCode decides the login that answers challenge c: the challenge
// used up, then a session of method email_code or magic_link under the
// live-session limit.
func (u *User) LoginWithCode(c Challenge, via, sessionID string, tokenHash TokenHash, keepLoggedIn bool, at time.Time, p Policy) []Event {
	method := SessionMethodEmailCode
	if via == ViaLink {
		method = SessionMethodMagicLink
	}
	used := newEvent(EventLoginCodeUsed, u.id, "", at, LoginCodeUsed{ChallengeID: c.ID, Via: via})
	return append([]Event{used}, u.Login(sessionID, tokenHash, method, keepLoggedIn, false, at, p)...)
}

// Codes and links.
const (
	// ChallengeCodeLen is the number of digits of a code.
	ChallengeCodeLen = 6
	// ResetLinkPrefix and LoginLinkPrefix start a link's token: reset
	// and magic login, so a token tells what it is for.
	ResetLinkPrefix = "slr_"
	LoginLinkPrefix = "slm_"
	LinkTokenLen    = 4 + sessionIDLen + secretEncLen
	challengeKeyCtx = "sessionledger email challenge v1"
	codeHashLabel   = "hmac-sha256:"
)

// NewChallengeSecrets are a new challenge's id and the hashes to store.
type NewChallengeSecrets struct {
	ID       string
	CodeHash string
	LinkHash TokenHash
	KeyID    string
}

// NewChallenge draws a challenge id, a code and a link token from rand
// (crypto/rand in production). The code's hash is keyed with key (see
// ChallengeKey) under signing key kid: six digits are a million guesses, so
// an unkeyed hash in the log would give the code away.
func NewChallenge(rand io.Reader, p Purpose, kid string, key []byte) (code, link string, s NewChallengeSecrets, err error) {
	var buf [16 + secretBytes]byte
	if _, err := io.ReadFull(rand, buf[:]); err != nil {
		return "", "", s, fmt.Errorf("new challenge: %w", err)
	}
	id := hex.EncodeToString(buf[:16])
	secret := buf[16:]
	prefix := ResetLinkPrefix
	if p == PurposeLogin {
		prefix = LoginLinkPrefix
	}
	link = prefix + id + base64.RawURLEncoding.EncodeToString(secret)
	if code, err = newCode(rand); err != nil {
		return "", "", s, err
	}
	return code, link, NewChallengeSecrets{ID: id, CodeHash: ChallengeCodeHash(key, id, code), LinkHash: sha256.Sum256(secret), KeyID: kid}, nil
}

// newCode draws ChallengeCodeLen uniform digits.
func newCode(rand io.Reader) (string, error) {
	const limit = 1_000_000
	for {
		var b [4]byte
		if _, err := io.ReadFull(rand, b[:]); err != nil {
			return "", fmt.Errorf("new code: %w", err)
		}
		v := binary.BigEndian.Uint32(b[:])
		if v < (1<<32/limit)*limit { // no modulo bias
			return fmt.Sprintf("%06d", v%limit), nil
		}
	}
}

// IsChallengeCode reports whether s has a code's shape.
func IsChallengeCode(s string) bool {
	if len(s) != ChallengeCodeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseLinkToken reads a link's token: its purpose, challenge id and the
// hash of its secret.
func ParseLinkToken(raw string) (p Purpose, id string, h TokenHash, err error) {
	switch {
	case len(raw) != LinkTokenLen:
		return "", "", h, ErrInvalidCode
	case strings.HasPrefix(raw, ResetLinkPrefix):
		p = PurposePasswordReset
	case strings.HasPrefix(raw, LoginLinkPrefix):
		p = PurposeLogin
	default:
		return "", "", h, ErrInvalidCode
	}
	id = raw[4 : 4+sessionIDLen]
	if !IsSessionID(id) {
		return "", "", h, ErrInvalidCode
	}
	var secret [secretBytes + 1]byte
	n, err := strictB64.Decode(secret[:], []byte(raw[4+sessionIDLen:]))
	if err != nil || n != secretBytes {
		return "", "", h, ErrInvalidCode
	}
	return p, id, sha256.Sum256(secret[:secretBytes]), nil
}

// ChallengeKey is the key codes are hashed with under signing key k:
// derived from it (HKDF-SHA256), so only the ledger's instances can check
// a code, and readers of the log cannot try the million codes against it.
func (k SigningKey) ChallengeKey() []byte {
	out := make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, k.priv.Seed(), nil, []byte(challengeKeyCtx)), out); err != nil {
		panic(err) // 32 bytes of HKDF-SHA256 cannot fail
	}
	return out
}

// ChallengeCodeHash is "hmac-sha256:<hex>" of a code of a challenge.
func ChallengeCodeHash(key []byte, challengeID, code string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("sessionledger/challenge-code/v1\x00" + challengeID + "\x00" + code))
	return codeHashLabel + hex.EncodeToString(m.Sum(nil))
}
