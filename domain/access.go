package domain

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Who may do what: roles of users, service keys with scopes, and the keys
// of registered apps. Every grant and every withdrawal is an event in the
// log, so "who could do this at that instant" is as auditable as a verdict.

// Role is a user's access level. The zero value is RoleUser: every account
// starts as a user, and only a user_role_changed event decided by an admin
// changes that.
type Role string

const (
	RoleGuest Role = "guest"
	RoleUser  Role = "user"
	RoleAdmin Role = "admin"
)

// Roles lists the roles, lowest first.
var Roles = []Role{RoleGuest, RoleUser, RoleAdmin}

// Or is r, or RoleUser for the zero value.
func (r Role) Or() Role {
	if r == "" {
		return RoleUser
	}
	return r
}

// ParseRole reads a role's name; anything else is ErrInvalidRole.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !slices.Contains(Roles, r) {
		return "", ErrInvalidRole
	}
	return r, nil
}

// AtLeast reports whether r ranks at or above min (guest < user < admin).
func (r Role) AtLeast(min Role) bool {
	return slices.Index(Roles, r.Or()) >= slices.Index(Roles, min.Or())
}

// Scope is what a service key may do.
type Scope string

const (
	ScopeValidate   Scope = "validate"   // validate tokens (gateways)
	ScopeIntrospect Scope = "introspect" // look into other callers' tokens
	ScopeFeed       Scope = "feed"       // follow the event feed
	ScopeAudit      Scope = "audit"      // the audit API
	ScopeAdmin      Scope = "admin"      // the admin API: keys, apps, roles, revocations
)

// Scopes lists every scope.
var Scopes = []Scope{ScopeValidate, ScopeIntrospect, ScopeFeed, ScopeAudit, ScopeAdmin}

// ParseScopes checks a key's scopes: at least one, each known, none twice.
// The result is sorted, so equal sets are written alike.
func ParseScopes(names []string) ([]Scope, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: a key needs at least one scope (%s)", ErrInvalidScope, scopeList())
	}
	out := make([]Scope, 0, len(names))
	for _, n := range names {
		s := Scope(n)
		if !slices.Contains(Scopes, s) {
			return nil, fmt.Errorf("%w: %q is not one of %s", ErrInvalidScope, n, scopeList())
		}
		if slices.Contains(out, s) {
			return nil, fmt.Errorf("%w: %q given twice", ErrInvalidScope, n)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

func scopeList() string {
	names := make([]string, len(Scopes))
	for i, s := range Scopes {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// Errors of access decisions.
var (
	ErrInvalidRole  = errors.New("role must be admin, user or guest")
	ErrInvalidScope = errors.New("invalid scope")
	ErrInvalidName  = errors.New("name must be 1 to 100 printable characters")
	ErrInvalidNote  = errors.New("actor must be at most 200 and note at most 1000 characters, printable")
	ErrKeyNotFound  = errors.New("no such service key")
	ErrAppNotFound  = errors.New("no such app")
)

// Key layout of service and app keys: a prefix that says what the key is
// (so a leaked one is recognised by secret scanners, and an app key is
// never mistaken for a service key), then 32 random bytes, base64url
// without padding (43 characters). Keys are high-entropy, so a plain
// SHA-256 of the whole key (KeyHash) is what is stored and looked up: no
// slow hash is needed, and the raw key exists only in the answer that
// created it.
const (
	ServiceKeyPrefix = "sk_live_"
	AppKeyPrefix     = "pk_live_"
	keySecretLen     = 43
)

// KeyHash is SHA-256 of a whole raw key.
type KeyHash [sha256.Size]byte

// HashKey hashes a raw key as presented.
func HashKey(raw string) KeyHash { return sha256.Sum256([]byte(raw)) }

// Equal compares in constant time.
func (h KeyHash) Equal(o KeyHash) bool { return subtle.ConstantTimeCompare(h[:], o[:]) == 1 }

// String is the form in events: "sha256:<hex>".
func (h KeyHash) String() string { return tokenHashLabel + hex.EncodeToString(h[:]) }

// ParseKeyHash reads the String form back.
func ParseKeyHash(s string) (KeyHash, error) {
	t, err := ParseTokenHash(s)
	return KeyHash(t), err
}

// NewServiceKey draws a service key from rand: the raw key, shown once,
// and the hash to store.
func NewServiceKey(rand io.Reader) (string, KeyHash, error) { return newKey(rand, ServiceKeyPrefix) }

// NewAppKey draws an app's (publishable) key.
func NewAppKey(rand io.Reader) (string, KeyHash, error) { return newKey(rand, AppKeyPrefix) }

func newKey(rand io.Reader, prefix string) (string, KeyHash, error) {
	var secret [32]byte
	if _, err := io.ReadFull(rand, secret[:]); err != nil {
		return "", KeyHash{}, fmt.Errorf("new key: %w", err)
	}
	raw := prefix + base64.RawURLEncoding.EncodeToString(secret[:])
	return raw, HashKey(raw), nil
}

// IsServiceKey and IsAppKey tell a key's kind by its shape, before any
// lookup.
func IsServiceKey(raw string) bool { return wellFormedKey(raw, ServiceKeyPrefix) }
func IsAppKey(raw string) bool     { return wellFormedKey(raw, AppKeyPrefix) }

func wellFormedKey(raw, prefix string) bool {
	secret, ok := strings.CutPrefix(raw, prefix)
	if !ok || len(secret) != keySecretLen {
		return false
	}
	var b [33]byte
	n, err := strictB64.Decode(b[:], []byte(secret))
	return err == nil && n == 32
}

// Subjects of the registries (the log adapter prefixes them with the
// stream's namespace): one history per kind of key, linear and
// hash-chained like a user's.
const (
	ServiceKeysRegistry = "service-keys"
	AppsRegistry        = "apps"
)

// Access event types.
const (
	EventServiceKeyCreated     EventType = "service_key_created"
	EventServiceKeyRevoked     EventType = "service_key_revoked"
	EventAppRegistered         EventType = "app_registered"
	EventAppRevoked            EventType = "app_revoked"
	EventUserRoleChanged       EventType = "user_role_changed"
	EventSessionRevokedByAdmin EventType = "session_revoked_by_admin"
)

// ReasonRevokedAdmin: an admin revoked the session (session_revoked_by_admin).
const ReasonRevokedAdmin Reason = "revoked:admin"

// Payloads of the access events. Field names are part of the documented
// schema. By names who decided (see Principal.By).
type (
	ServiceKeyCreated struct {
		ID      string  `json:"id"`
		Name    string  `json:"name"`
		Scopes  []Scope `json:"scopes"`
		KeyHash string  `json:"key_hash"`
		By      string  `json:"by"`
	}
	ServiceKeyRevoked struct {
		ID string `json:"id"`
		By string `json:"by"`
	}
	AppRegistered struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		KeyHash string `json:"key_hash"`
		By      string `json:"by"`
	}
	AppRevoked struct {
		ID string `json:"id"`
		By string `json:"by"`
	}
	UserRoleChanged struct {
		Role     Role   `json:"role"`
		Previous Role   `json:"previous"`
		By       string `json:"by"`
	}
	SessionRevokedByAdmin struct {
		Actor string `json:"actor,omitempty"` // who asked, as the caller says (free text)
		Note  string `json:"note,omitempty"`
		By    string `json:"by"` // the credential that decided it
	}
)

// Principal is who a request acts as, once its credential is checked: a
// service key (the bootstrap key is one with every scope) or a user's
// session.
type Principal struct {
	KeyID     string // service key id; "bootstrap" for the configured key
	KeyName   string
	Scopes    []Scope
	UserID    string // a user's session
	SessionID string
	Role      Role
	// Operator is someone with the ledger's signing key, acting through
	// the CLI (`ledger keys create`, `ledger users set-role`).
	Operator string
}

// BootstrapKeyID names the configured key (LEDGER_ADMIN_KEY, the admin key
// file): it is in no event of its own, but decisions it makes say so.
const BootstrapKeyID = "bootstrap"

// Has reports whether a service key principal carries scope s.
func (p Principal) Has(s Scope) bool { return slices.Contains(p.Scopes, s) }

// By is how decisions name the principal: "service_key:<id>",
// "service_key:bootstrap", "user:<id>" or "operator:<name>".
func (p Principal) By() string {
	if p.Operator != "" {
		return "operator:" + p.Operator
	}
	if p.KeyID != "" {
		return "service_key:" + p.KeyID
	}
	return "user:" + p.UserID
}

func checkName(name string) error {
	if name == "" || utf8.RuneCountInString(name) > 100 || !printable(name) {
		return ErrInvalidName
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// CreateServiceKey decides a new service key: id and hash are the caller's
// (the raw key never reaches the domain).
func CreateServiceKey(id, name string, scopes []Scope, hash KeyHash, by Principal, at time.Time) (Event, error) {
	if err := checkName(name); err != nil {
		return Event{}, err
	}
	if _, err := ParseScopes(scopeNames(scopes)); err != nil {
		return Event{}, err
	}
	return newEvent(EventServiceKeyCreated, "", "", at, ServiceKeyCreated{ID: id, Name: name, Scopes: scopes, KeyHash: hash.String(), By: by.By()}), nil
}

func scopeNames(s []Scope) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = string(x)
	}
	return out
}

// RevokeServiceKey decides a revocation; revoking a revoked key is a no-op
// (no event).
func RevokeServiceKey(k Credential, by Principal, at time.Time) (Event, bool) {
	if k.Revoked() {
		return Event{}, false
	}
	return newEvent(EventServiceKeyRevoked, "", "", at, ServiceKeyRevoked{ID: k.ID, By: by.By()}), true
}

// RegisterApp decides a new app with its key's hash.
func RegisterApp(id, name string, hash KeyHash, by Principal, at time.Time) (Event, error) {
	if err := checkName(name); err != nil {
		return Event{}, err
	}
	return newEvent(EventAppRegistered, "", "", at, AppRegistered{ID: id, Name: name, KeyHash: hash.String(), By: by.By()}), nil
}

// RevokeApp decides an app's revocation; a no-op if it already is.
func RevokeApp(a Credential, by Principal, at time.Time) (Event, bool) {
	if a.Revoked() {
		return Event{}, false
	}
	return newEvent(EventAppRevoked, "", "", at, AppRevoked{ID: a.ID, By: by.By()}), true
}

// Credential kinds.
const (
	KindServiceKey = "service_key"
	KindApp        = "app"
)

// Credential is a service key or an app as folded from its registry.
type Credential struct {
	Kind      string    `json:"kind"`
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Scopes    []Scope   `json:"scopes,omitempty"`
	KeyHash   string    `json:"key_hash"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
}

func (c Credential) Revoked() bool { return !c.RevokedAt.IsZero() }

// CredentialFromEvent folds a creation (service_key_created,
// app_registered).
func CredentialFromEvent(e Event) (Credential, error) {
	switch e.Type {
	case EventServiceKeyCreated:
		p, err := DecodePayload[ServiceKeyCreated](e)
		if err != nil {
			return Credential{}, err
		}
		if _, err := ParseKeyHash(p.KeyHash); err != nil || p.ID == "" {
			return Credential{}, fmt.Errorf("event %s: incomplete %s", e.ID, e.Type)
		}
		return Credential{Kind: KindServiceKey, ID: p.ID, Name: p.Name, Scopes: p.Scopes, KeyHash: p.KeyHash, CreatedAt: e.Time, CreatedBy: p.By}, nil
	case EventAppRegistered:
		p, err := DecodePayload[AppRegistered](e)
		if err != nil {
			return Credential{}, err
		}
		if _, err := ParseKeyHash(p.KeyHash); err != nil || p.ID == "" {
			return Credential{}, fmt.Errorf("event %s: incomplete %s", e.ID, e.Type)
		}
		return Credential{Kind: KindApp, ID: p.ID, Name: p.Name, KeyHash: p.KeyHash, CreatedAt: e.Time, CreatedBy: p.By}, nil
	}
	return Credential{}, fmt.Errorf("credential from %s event", e.Type)
}

// RevokedCredential is the id and decider of a revocation (service key or
// app).
func RevokedCredential(e Event) (id, by string, err error) {
	switch e.Type {
	case EventServiceKeyRevoked:
		p, err := DecodePayload[ServiceKeyRevoked](e)
		return p.ID, p.By, err
	case EventAppRevoked:
		p, err := DecodePayload[AppRevoked](e)
		return p.ID, p.By, err
	}
	return "", "", fmt.Errorf("revocation from %s event", e.Type)
}

// Role is the user's role.
func (u *User) Role() Role { return u.role.Or() }

// WithRole is the user with its role, as stored by a projection.
func (u *User) WithRole(r Role) *User {
	c := *u
	c.role = r.Or()
	return &c
}

// ChangeRole decides a new role for the user; the same role again is a
// no-op (ok is false).
func (u *User) ChangeRole(role Role, by Principal, at time.Time) (e Event, ok bool, err error) {
	if _, err := ParseRole(string(role)); err != nil {
		return Event{}, false, err
	}
	if role == u.Role() {
		return Event{}, false, nil
	}
	return newEvent(EventUserRoleChanged, u.id, "", at, UserRoleChanged{Role: role, Previous: u.Role(), By: by.By()}), true, nil
}

// ApplyRole folds a user_role_changed event into a role.
func ApplyRole(r Role, e Event) (Role, error) {
	if e.Type != EventUserRoleChanged {
		return r, nil
	}
	p, err := DecodePayload[UserRoleChanged](e)
	if err != nil {
		return r, err
	}
	if _, err := ParseRole(string(p.Role)); err != nil {
		return r, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return p.Role, nil
}

func checkNote(actor, note string) error {
	if utf8.RuneCountInString(actor) > 200 || utf8.RuneCountInString(note) > 1000 || !printable(actor) || !printable(note) {
		return ErrInvalidNote
	}
	return nil
}

// RevokeByAdmin decides an admin's revocation of one of the user's
// sessions. A session of another user is not found; one that is no longer
// live is left as it is (ok is false).
func (u *User) RevokeByAdmin(sessionID, actor, note string, by Principal, at time.Time) (e Event, ok bool, err error) {
	if err := checkNote(actor, note); err != nil {
		return Event{}, false, err
	}
	s, found := u.sessions[sessionID]
	if !found {
		return Event{}, false, ErrSessionNotFound
	}
	if !s.live(at) {
		return Event{}, false, nil
	}
	return newEvent(EventSessionRevokedByAdmin, u.id, sessionID, at, SessionRevokedByAdmin{Actor: actor, Note: note, By: by.By()}), true, nil
}

// RevokeAllByAdmin decides an admin's revocation of every session of the
// user live at `at`: one session_revoked_by_admin each, oldest first.
func (u *User) RevokeAllByAdmin(actor, note string, by Principal, at time.Time) ([]Event, error) {
	if err := checkNote(actor, note); err != nil {
		return nil, err
	}
	var live []*Session
	for _, s := range u.sessions {
		if s.live(at) {
			live = append(live, s)
		}
	}
	slices.SortFunc(live, func(a, b *Session) int {
		if c := a.startedAt.Compare(b.startedAt); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	out := make([]Event, 0, len(live))
	for _, s := range live {
		out = append(out, newEvent(EventSessionRevokedByAdmin, u.id, s.id, at, SessionRevokedByAdmin{Actor: actor, Note: note, By: by.By()}))
	}
	return out, nil
}
