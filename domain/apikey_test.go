package domain_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

func TestAPIKeyParsesBackAndRefusesLookAlikes(t *testing.T) {
	raw, id, hash, err := domain.NewAPIKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(raw, "pak_") || len(raw) != domain.APIKeyLen || !strings.HasPrefix(raw, "pak_"+id) {
		t.Fatalf("raw key %q (id %s)", raw, id)
	}
	gotID, gotHash, err := domain.ParseAPIKey(raw)
	if err != nil || gotID != id || !gotHash.Equal(hash) {
		t.Fatalf("parse: %s %v %v", gotID, gotHash == hash, err)
	}
	tok, _, _, _ := domain.NewToken(rand.Reader)
	for name, bad := range map[string]string{
		"empty":           "",
		"session token":   tok,
		"other prefix":    "sk_" + raw[len("pak_"):] + "x",
		"upper-case id":   "pak_" + strings.ToUpper(id) + raw[len("pak_")+32:],
		"short":           raw[:len(raw)-1],
		"long":            raw + "A",
		"not base64url":   raw[:len(raw)-1] + "+",
		"padding bits on": raw[:len(raw)-1] + "B", // the last char of 32 bytes carries 4 zero bits
	} {
		if bad == raw {
			continue
		}
		if _, _, err := domain.ParseAPIKey(bad); !errors.Is(err, domain.ErrMalformedAPIKey) {
			t.Errorf("%s: %q parsed (%v)", name, bad, err)
		}
	}
	if h := domain.APIKeyHint(id); h != "pak_"+id[:8]+"…" {
		t.Fatalf("hint %q", h)
	}
}

// keyUser is a user with one live session "s0…" started at t0, folded
// with the API key events given so far.
type keyUser struct {
	t        *testing.T
	session  *domain.Session
	keys     map[string]domain.APIKey
	failures domain.LoginFailures
}

const callerSID = "5e55105e55105e55105e55105e551050"

func newKeyUser(t *testing.T) *keyUser {
	return &keyUser{t: t, session: start(t, domain.DefaultPolicy(), "u1", callerSID, true, false, t0), keys: map[string]domain.APIKey{}}
}

func (k *keyUser) user() *domain.User {
	var keys []domain.APIKey
	for _, key := range k.keys {
		keys = append(keys, key)
	}
	return domain.NewUser("u1", "a@example.com", "hash", []*domain.Session{k.session}).WithFailures(k.failures).WithAPIKeys(keys)
}

// fold applies events as the projection does.
func (k *keyUser) fold(events ...domain.Event) {
	k.t.Helper()
	for _, e := range events {
		e = roundTrip(k.t, e)
		switch e.Type {
		case domain.EventAPIKeyCreated:
			key, err := domain.APIKeyFromEvent(e)
			if err != nil {
				k.t.Fatal(err)
			}
			k.keys[key.ID] = key
		case domain.EventAPIKeyRevoked:
			p, _ := domain.DecodePayload[domain.APIKeyRevoked](e)
			delete(k.keys, p.KeyID)
		case domain.EventAPIKeyUsed:
			p, _ := domain.DecodePayload[domain.APIKeyUsed](e)
			k.keys[p.KeyID] = k.keys[p.KeyID].WithUse(e.Time)
		}
		f, err := k.failures.Apply(e)
		if err != nil {
			k.t.Fatal(err)
		}
		k.failures = f
	}
}

func (k *keyUser) create(name string, expires, at time.Time) (raw, id string) {
	k.t.Helper()
	raw, id, hash, err := domain.NewAPIKey(rand.Reader)
	if err != nil {
		k.t.Fatal(err)
	}
	e, err := k.user().CreateAPIKey(callerSID, id, name, hash, expires, at, domain.DefaultAPIKeyRules())
	if err != nil {
		k.t.Fatal(err)
	}
	k.fold(e)
	return raw, id
}

func (k *keyUser) exchange(raw string, at time.Time, r domain.LoginThrottle) ([]domain.Event, bool) {
	id, secret, err := domain.ParseAPIKey(raw)
	_, sid, th, _ := domain.NewToken(rand.Reader)
	events, ok := k.user().LoginWithAPIKey(domain.APIKeyLogin{KeyID: id, Secret: secret, Malformed: err != nil, SessionID: sid, TokenHash: th, Email: "a@example.com"},
		at, domain.DefaultPolicy(), domain.DefaultAPIKeyRules(), r)
	k.fold(events...)
	return events, ok
}

// otherSecret changes one character in the middle of a well-formed key, so
// the result is still well-formed but never equal to raw. (Changing the last
// character is not enough: it carries padding bits, so it is one of only four
// values and "A" a quarter of the time.)
func otherSecret(raw string) string {
	i := len(raw) / 2
	c := byte('A')
	if raw[i] == c {
		c = 'B'
	}
	return raw[:i] + string(c) + raw[i+1:]
}

func typeList(events []domain.Event) string {
	var out []string
	for _, e := range events {
		out = append(out, string(e.Type))
	}
	return strings.Join(out, ",")
}

// TestAPIKeyExchange: a key starts sessions of method api_key that name
// it, records its use at most once per granularity, and caps the session
// at its own expiry; a wrong secret, an unknown, malformed, expired or
// revoked key all fail as a wrong password does (login_failed
// wrong_api_key).
func TestAPIKeyExchange(t *testing.T) {
	k := newKeyUser(t)
	raw, id := k.create("ci", time.Time{}, t0.Add(time.Minute))
	at := t0.Add(2 * time.Minute)
	events, ok := k.exchange(raw, at, domain.DefaultLoginThrottle())
	if !ok || typeList(events) != "api_key_used,session_started" {
		t.Fatalf("exchange: ok=%v %s", ok, typeList(events))
	}
	s, err := domain.SessionFromEvent(roundTrip(t, events[1]))
	if err != nil || s.Method() != "api_key" {
		t.Fatalf("session %+v %v", s, err)
	}
	if p, _ := domain.DecodePayload[domain.SessionStarted](events[1]); p.APIKeyID != id || !p.MaxExpiresAt.Equal(at.Add(24*time.Hour)) {
		t.Fatalf("session_started %+v", p)
	}
	if !k.keys[id].LastUsedAt.Equal(at) {
		t.Fatalf("last use %s, want %s", k.keys[id].LastUsedAt, at)
	}
	if events, _ := k.exchange(raw, at.Add(59*time.Minute), domain.DefaultLoginThrottle()); typeList(events) != "session_started" {
		t.Fatalf("second exchange within the granularity: %s", typeList(events))
	}
	if events, _ := k.exchange(raw, at.Add(time.Hour), domain.DefaultLoginThrottle()); typeList(events) != "api_key_used,session_started" {
		t.Fatalf("exchange a granularity later: %s", typeList(events))
	}

	wrong := otherSecret(raw)
	other, _, _, _ := domain.NewAPIKey(rand.Reader)
	for name, key := range map[string]string{"wrong secret": wrong, "unknown key": other, "malformed": "pak_nope", "session token": "slt_x"} {
		events, ok := k.exchange(key, at.Add(2*time.Hour), domain.DefaultLoginThrottle())
		p, _ := domain.DecodePayload[domain.LoginFailed](events[0])
		if ok || events[0].Type != domain.EventLoginFailed || p.Reason != "wrong_api_key" || p.EmailHash != domain.EmailHash("a@example.com") {
			t.Fatalf("%s: ok=%v %s %+v", name, ok, typeList(events), p)
		}
		k.fold(k.user().Login(callerSID+"x", domain.TokenHash{}, "password", false, false, at.Add(2*time.Hour), domain.DefaultPolicy())...) // start over
	}

	// An expiring key caps its sessions, and fails from its expiry on.
	exp := t0.Add(3 * time.Hour)
	short, _ := k.create("short", exp, t0.Add(2*time.Hour))
	events, ok = k.exchange(short, t0.Add(2*time.Hour+time.Minute), domain.DefaultLoginThrottle())
	if p, _ := domain.DecodePayload[domain.SessionStarted](events[len(events)-1]); !ok || !p.MaxExpiresAt.Equal(exp) {
		t.Fatalf("session of a key expiring at %s: ok=%v max %s", exp, ok, p.MaxExpiresAt)
	}
	if _, ok := k.exchange(short, exp, domain.DefaultLoginThrottle()); ok {
		t.Fatal("a key exchanged at its expiry")
	}

	// Revoked: gone, and not found a second time.
	e, err := k.user().RevokeAPIKey(callerSID, id, at.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	k.fold(e)
	if _, ok := k.exchange(raw, at.Add(3*time.Hour), domain.DefaultLoginThrottle()); ok {
		t.Fatal("a revoked key exchanged")
	}
	if _, err := k.user().RevokeAPIKey(callerSID, id, at.Add(3*time.Hour)); !errors.Is(err, domain.ErrAPIKeyNotFound) {
		t.Fatalf("revoking twice: %v", err)
	}
}

// TestWrongAPIKeysThrottleTheAccount: wrong keys count towards the same
// throttle as wrong passwords, and a success starts the count over.
func TestWrongAPIKeysThrottleTheAccount(t *testing.T) {
	rule := domain.LoginThrottle{After: 3, Window: time.Hour, Base: 30 * time.Second, Max: time.Minute}
	k := newKeyUser(t)
	raw, _ := k.create("ci", time.Time{}, t0)
	k.fold(k.user().FailLogin("a@example.com", t0.Add(time.Second), rule)...) // a wrong password
	k.exchange("pak_wrong", t0.Add(2*time.Second), rule)
	events, _ := k.exchange(otherSecret(raw), t0.Add(3*time.Second), rule)
	if typeList(events) != "login_failed,login_throttled" {
		t.Fatalf("third failure in a row (password, key, key): %s", typeList(events))
	}
	if until, throttled := k.failures.ThrottledAt(t0.Add(4 * time.Second)); !throttled || !until.Equal(t0.Add(33*time.Second)) {
		t.Fatalf("throttled %v until %s", throttled, until)
	}
	if _, ok := k.exchange(raw, t0.Add(time.Minute), rule); !ok || !k.failures.IsZero() {
		t.Fatalf("the right key after the throttle: ok=%v failures %+v", ok, k.failures)
	}
}

func TestAPIKeyCreationRules(t *testing.T) {
	k := newKeyUser(t)
	r := domain.DefaultAPIKeyRules()
	_, _, hash, _ := domain.NewAPIKey(rand.Reader)
	id := "00112233445566778899aabbccddeeff"
	for name, c := range map[string]struct {
		name    string
		expires time.Time
		want    error
	}{
		"empty name":        {"", time.Time{}, domain.ErrInvalidAPIKeyName},
		"spaces only":       {"   ", time.Time{}, domain.ErrInvalidAPIKeyName},
		"control character": {"a\nb", time.Time{}, domain.ErrInvalidAPIKeyName},
		"name too long":     {strings.Repeat("é", 101), time.Time{}, domain.ErrInvalidAPIKeyName},
		"expired at birth":  {"ok", t0, domain.ErrInvalidAPIKeyTTL},
		"beyond max":        {"ok", t0.Add(r.MaxLifetime + time.Second), domain.ErrInvalidAPIKeyTTL},
	} {
		if _, err := k.user().CreateAPIKey(callerSID, id, c.name, hash, c.expires, t0, r); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if _, err := k.user().CreateAPIKey(callerSID, id, strings.Repeat("é", 100), hash, t0.Add(r.MaxLifetime), t0, r); err != nil {
		t.Fatalf("the longest name and expiry: %v", err)
	}
	if _, err := k.user().CreateAPIKey("ffffffffffffffffffffffffffffffff", id, "ok", hash, time.Time{}, t0, r); !errors.Is(err, domain.ErrSessionNotFound) {
		t.Fatalf("on behalf of another session: %v", err)
	}
	if _, err := k.user().CreateAPIKey(callerSID, id, "ok", hash, time.Time{}, t0.Add(400*domain.Day), r); !errors.Is(err, domain.ErrSessionNotActive) {
		t.Fatalf("on behalf of an expired session: %v", err)
	}

	// The cap counts keys that are not revoked, expired ones included.
	var first string
	for i := range r.MaxPerUser {
		exp := time.Time{}
		if i == 0 {
			exp = t0.Add(time.Hour)
		}
		_, kid := k.create("key", exp, t0)
		if i == 0 {
			first = kid
		}
	}
	if _, err := k.user().CreateAPIKey(callerSID, id, "one more", hash, time.Time{}, t0.Add(2*time.Hour), r); !errors.Is(err, domain.ErrTooManyAPIKeys) {
		t.Fatalf("key %d: %v, want ErrTooManyAPIKeys", r.MaxPerUser+1, err)
	}
	e, err := k.user().RevokeAPIKey(callerSID, first, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	k.fold(e)
	more, err := k.user().CreateAPIKey(callerSID, id, "one more", hash, time.Time{}, t0.Add(2*time.Hour), r)
	if err != nil {
		t.Fatalf("after revoking one: %v", err)
	}
	k.fold(more)
	if len(k.user().APIKeys()) != r.MaxPerUser {
		t.Fatal("keys lost")
	}
	if !bytes.Contains(roundTrip(t, e).Payload, []byte(first)) {
		t.Fatal("api_key_revoked does not name its key")
	}
}
