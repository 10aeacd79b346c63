package domain_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newUserWith starts a user with sessions started at t0 with the given
// (keepLoggedIn, mfa) flags; session ids are "s0", "s1", ...
func start(t *testing.T, p domain.Policy, userID, sessionID string, keep, mfa bool, at time.Time) *domain.Session {
	t.Helper()
	u := domain.NewUser(userID, "a@example.com", "hash", nil)
	_, _, h, err := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	e := u.StartSession(sessionID, h, "password", keep, mfa, at, p)
	e.ID = "ev-start-" + sessionID
	s, err := domain.SessionFromEvent(roundTrip(t, e))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// roundTrip pushes an event through its stored JSON form, as the projection
// sees it.
func roundTrip(t *testing.T, e domain.Event) domain.Event {
	t.Helper()
	if e.ID == "" {
		e.ID = "ev"
	}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := domain.DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMaxLifetimes(t *testing.T) {
	p := domain.DefaultPolicy()
	cases := []struct {
		name      string
		keep, mfa bool
		want      time.Duration
	}{
		{"keep logged in: 12 months", true, false, 365 * 24 * time.Hour},
		{"plain: 24h", false, false, 24 * time.Hour},
		{"2FA keep logged in: 1 month", true, true, 30 * 24 * time.Hour},
		{"2FA plain: 24h", false, true, 24 * time.Hour},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := p.MaxLifetime(c.keep, c.mfa); got != c.want {
				t.Fatalf("MaxLifetime = %s, want %s", got, c.want)
			}
			s := start(t, p, "u1", "s1", c.keep, c.mfa, t0)
			v := s.Verdict(t0)
			if !v.Valid || !v.MaxExpiresAt.Equal(t0.Add(c.want)) {
				t.Fatalf("at start: %+v, want valid with max %s", v, t0.Add(c.want))
			}
		})
	}
}

func TestVerdictRules(t *testing.T) {
	p := domain.DefaultPolicy()
	const day = 24 * time.Hour
	type step struct {
		event func(s *domain.Session) domain.Event // applied in order
	}
	use := func(at time.Time) func(*domain.Session) domain.Event {
		return func(s *domain.Session) domain.Event { return domain.SessionUse(s.UserID(), s.ID(), at) }
	}
	cases := []struct {
		name      string
		keep, mfa bool
		events    []func(*domain.Session) domain.Event
		at        time.Time
		want      domain.Reason
		wantIdle  time.Time // zero: not checked
	}{
		{name: "fresh session is valid", keep: true, at: t0.Add(time.Minute), want: domain.ReasonNone, wantIdle: t0.Add(30 * day)},
		{name: "before start it is not started", keep: true, at: t0.Add(-time.Second), want: domain.ReasonNotStarted},
		{name: "idle: one second before the idle deadline", keep: true, at: t0.Add(30*day - time.Second), want: domain.ReasonNone},
		{name: "idle: exactly at the idle deadline it expires", keep: true, at: t0.Add(30 * day), want: domain.ReasonExpiredIdle},
		{name: "idle: unused for 30 days expires before max", keep: true, at: t0.Add(31 * day), want: domain.ReasonExpiredIdle},
		{name: "use slides the idle deadline", keep: true, events: []func(*domain.Session) domain.Event{use(t0.Add(20 * day))},
			at: t0.Add(45 * day), want: domain.ReasonNone, wantIdle: t0.Add(50 * day)},
		{name: "slid deadline still expires", keep: true, events: []func(*domain.Session) domain.Event{use(t0.Add(20 * day))},
			at: t0.Add(50 * day), want: domain.ReasonExpiredIdle},
		{name: "uses keep a 12-month session alive until max, idle capped at max", keep: true, events: usesEvery(25*day, 350*day),
			at: t0.Add(365*day - time.Second), want: domain.ReasonNone, wantIdle: t0.Add(365 * day)},
		{name: "exactly at max it expires (max, not idle)", keep: true, events: usesEvery(25*day, 350*day),
			at: t0.Add(365 * day), want: domain.ReasonExpiredMax},
		{name: "24h session expires at max before idle", keep: false, at: t0.Add(24 * time.Hour), want: domain.ReasonExpiredMax},
		{name: "24h session valid one second before max", keep: false, at: t0.Add(24*time.Hour - time.Second), want: domain.ReasonNone, wantIdle: t0.Add(24 * time.Hour)},
		{name: "2FA keep logged in expires at 30 days", keep: true, mfa: true, events: []func(*domain.Session) domain.Event{use(t0.Add(29 * day))},
			at: t0.Add(30 * day), want: domain.ReasonExpiredMax},
		{name: "use after idle expiry changes nothing", keep: true, events: []func(*domain.Session) domain.Event{use(t0.Add(31 * day))},
			at: t0.Add(32 * day), want: domain.ReasonExpiredIdle},
		{name: "use after max changes nothing", keep: false, events: []func(*domain.Session) domain.Event{use(t0.Add(25 * time.Hour))},
			at: t0.Add(25 * time.Hour), want: domain.ReasonExpiredMax},
		{name: "use before start changes nothing", keep: true, events: []func(*domain.Session) domain.Event{use(t0.Add(-time.Hour))},
			at: t0.Add(30 * day), want: domain.ReasonExpiredIdle},
		{name: "logout revokes", keep: true, events: []func(*domain.Session) domain.Event{
			func(s *domain.Session) domain.Event { e, _ := userOf(s).Logout(s.ID(), t0.Add(time.Hour)); return e }},
			at: t0.Add(2 * time.Hour), want: domain.ReasonRevokedLogout},
		{name: "a folded logout is final even before its own time (decided on a clock running ahead)", keep: true, events: []func(*domain.Session) domain.Event{
			func(s *domain.Session) domain.Event { e, _ := userOf(s).Logout(s.ID(), t0.Add(time.Hour)); return e }},
			at: t0.Add(time.Hour - 5*time.Second), want: domain.ReasonRevokedLogout},
		{name: "use of a revoked token changes nothing", keep: true, events: []func(*domain.Session) domain.Event{
			func(s *domain.Session) domain.Event { e, _ := userOf(s).Logout(s.ID(), t0.Add(time.Hour)); return e },
			use(t0.Add(2 * time.Hour))},
			at: t0.Add(3 * time.Hour), want: domain.ReasonRevokedLogout},
		{name: "terminate revokes", keep: true, events: []func(*domain.Session) domain.Event{
			func(s *domain.Session) domain.Event {
				return domain.Event{Type: domain.EventSessionTerminated, UserID: s.UserID(), SessionID: s.ID(), Time: t0.Add(time.Hour), SchemaVersion: 1, Payload: []byte(`{}`)}
			}},
			at: t0.Add(time.Hour), want: domain.ReasonRevokedTerminated},
		{name: "revocation after idle expiry does not rewrite the reason", keep: true, events: []func(*domain.Session) domain.Event{
			func(s *domain.Session) domain.Event {
				return domain.Event{Type: domain.EventSessionLoggedOut, UserID: s.UserID(), SessionID: s.ID(), Time: t0.Add(40 * day), SchemaVersion: 1, Payload: []byte(`{}`)}
			}},
			at: t0.Add(41 * day), want: domain.ReasonExpiredIdle},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := start(t, p, "u1", "s1", c.keep, c.mfa, t0)
			for _, ev := range c.events {
				if err := s.Apply(roundTrip(t, ev(s))); err != nil {
					t.Fatal(err)
				}
			}
			v := s.Verdict(c.at)
			if v.Reason != c.want || v.Valid != (c.want == domain.ReasonNone) {
				t.Fatalf("verdict at %s = %+v, want reason %q", c.at, v, c.want)
			}
			if !c.wantIdle.IsZero() && !v.IdleExpiresAt.Equal(c.wantIdle) {
				t.Fatalf("idle deadline = %s, want %s", v.IdleExpiresAt, c.wantIdle)
			}
		})
	}
}

// usesEvery returns uses at t0+every, t0+2*every, ... up to t0+until.
func usesEvery(every, until time.Duration) []func(*domain.Session) domain.Event {
	var out []func(*domain.Session) domain.Event
	for d := every; d <= until; d += every {
		at := t0.Add(d)
		out = append(out, func(s *domain.Session) domain.Event { return domain.SessionUse(s.UserID(), s.ID(), at) })
	}
	return out
}

func userOf(s *domain.Session) *domain.User {
	return domain.NewUser(s.UserID(), "a@example.com", "hash", []*domain.Session{s})
}

func TestRevokeOthersKeepsCurrent(t *testing.T) {
	p := domain.DefaultPolicy()
	cur := start(t, p, "u1", "cur", true, false, t0)
	other := start(t, p, "u1", "other", true, false, t0)
	dead := start(t, p, "u1", "dead", false, false, t0) // 24h session, dead by the time of the revoke
	foreign := start(t, p, "u2", "foreign", true, false, t0)
	u := domain.NewUser("u1", "a@example.com", "hash", []*domain.Session{cur, other, dead})

	at := t0.Add(48 * time.Hour)
	e, n, ok, err := u.RevokeOthers("cur", at)
	if err != nil || !ok || n != 1 {
		t.Fatalf("RevokeOthers = n %d ok %v err %v, want 1 revoked", n, ok, err)
	}
	e.ID = "ev-revoke"
	e = roundTrip(t, e)
	for _, s := range []*domain.Session{cur, other, dead, foreign} {
		if err := s.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		s    *domain.Session
		want domain.Reason
	}{
		{cur, domain.ReasonNone},
		{other, domain.ReasonRevokedOthers},
		{dead, domain.ReasonExpiredMax},
		{foreign, domain.ReasonNone},
	} {
		if got := c.s.Verdict(at.Add(time.Second)).Reason; got != c.want {
			t.Errorf("session %s: reason %q, want %q", c.s.ID(), got, c.want)
		}
	}
	// Nothing left to revoke: no event.
	u = domain.NewUser("u1", "a@example.com", "hash", []*domain.Session{cur, other, dead})
	if _, n, ok, err := u.RevokeOthers("cur", at.Add(time.Second)); err != nil || ok || n != 0 {
		t.Fatalf("second RevokeOthers = n %d ok %v err %v, want nothing", n, ok, err)
	}
}

func TestDecisionsOnDeadSessions(t *testing.T) {
	p := domain.DefaultPolicy()
	cur := start(t, p, "u1", "cur", false, false, t0)
	other := start(t, p, "u1", "other", true, false, t0)
	u := domain.NewUser("u1", "a@example.com", "hash", []*domain.Session{cur, other})
	late := t0.Add(25 * time.Hour) // cur is past its 24h max

	if _, err := u.Logout("cur", late); !errors.Is(err, domain.ErrSessionNotActive) {
		t.Errorf("logout of expired session: err %v, want ErrSessionNotActive", err)
	}
	if _, err := u.Logout("nope", t0); !errors.Is(err, domain.ErrSessionNotFound) {
		t.Errorf("logout of unknown session: err %v, want ErrSessionNotFound", err)
	}
	if _, _, _, err := u.RevokeOthers("cur", late); !errors.Is(err, domain.ErrSessionNotActive) {
		t.Errorf("revoke-others from expired session: err %v, want ErrSessionNotActive", err)
	}
	if _, _, err := u.Terminate("other", "not-mine", t0); !errors.Is(err, domain.ErrSessionNotFound) {
		t.Errorf("terminate of a session that is not the user's: err %v, want ErrSessionNotFound", err)
	}
	if _, ok, err := u.Terminate("other", "cur", late); err != nil || ok {
		t.Errorf("terminate of an already-dead session: ok %v err %v, want a no-op", ok, err)
	}
	e, ok, err := u.Terminate("other", "cur", t0.Add(time.Hour))
	if err != nil || !ok || e.Type != domain.EventSessionTerminated || e.SessionID != "cur" {
		t.Fatalf("terminate: %+v ok %v err %v", e, ok, err)
	}
}

func TestDecodeEventRejects(t *testing.T) {
	for name, raw := range map[string]string{
		"not json":       `{`,
		"unknown type":   `{"type":"session_teleported","event_id":"x","time":"2026-01-01T00:00:00Z","schema_version":1}`,
		"future schema":  `{"type":"session_used","event_id":"x","time":"2026-01-01T00:00:00Z","schema_version":99}`,
		"missing time":   `{"type":"session_used","event_id":"x","schema_version":1}`,
		"missing schema": `{"type":"session_used","event_id":"x","time":"2026-01-01T00:00:00Z"}`,
	} {
		if _, err := domain.DecodeEvent([]byte(raw)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := domain.DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	p := domain.DefaultPolicy()
	p.IdleWindow = 0
	if p.Validate() == nil {
		t.Fatal("zero idle window accepted")
	}
}

// TestRevocationFollowsLogOrderNotClocks: a session started on an instance
// whose clock runs 3 s ahead of the one that later decides logout-others
// carries a start time after the revocation's; it precedes it in the log,
// so it is revoked, and validation on the slow instance calls it revoked,
// not "not started".
func TestRevocationFollowsLogOrderNotClocks(t *testing.T) {
	p := domain.DefaultPolicy()
	cur := start(t, p, "u1", "cur", true, false, t0)
	ahead := start(t, p, "u1", "ahead", true, false, t0.Add(3*time.Second)) // started on the fast instance
	u := domain.NewUser("u1", "a@example.com", "hash", []*domain.Session{cur, ahead})
	decided := t0.Add(time.Second) // the slow instance's clock
	e, n, ok, err := u.RevokeOthers("cur", decided)
	if err != nil || !ok || n != 1 {
		t.Fatalf("RevokeOthers from the slow instance = n %d ok %v err %v, want the fast instance's session counted", n, ok, err)
	}
	e.ID = "ev-revoke"
	if err := ahead.Apply(roundTrip(t, e)); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Time{decided, t0.Add(time.Hour), t0.Add(200 * domain.Day)} {
		if v := ahead.Current(at); v.Valid || v.Reason != domain.ReasonRevokedOthers {
			t.Fatalf("Current(%s) = %+v, want revoked:revoke_others", at, v)
		}
	}
	// Live validation of a just-started session on a clock behind its start.
	fresh := start(t, p, "u1", "fresh", false, false, t0.Add(5*time.Second))
	if v := fresh.Current(t0); !v.Valid {
		t.Fatalf("Current before the start time = %+v, want valid: the log says it started", v)
	}
	if v := fresh.Verdict(t0); v.Reason != domain.ReasonNotStarted {
		t.Fatalf("Verdict (the as-of rule) before the start time = %+v, want not_started", v)
	}
}

func TestNextEventTimeNeverGoesBack(t *testing.T) {
	last := t0.Add(5 * time.Second)
	if got := domain.NextEventTime(t0, last); !got.Equal(last) {
		t.Fatalf("NextEventTime(behind) = %s, want the last event's time %s", got, last)
	}
	if got := domain.NextEventTime(t0.Add(time.Minute), last); !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("NextEventTime(ahead) = %s, want now", got)
	}
}

func TestWithUseIsTheFoldedUse(t *testing.T) {
	s := start(t, domain.DefaultPolicy(), "u1", "s1", true, false, t0)
	at := t0.Add(10 * domain.Day)
	folded := start(t, domain.DefaultPolicy(), "u1", "s1", true, false, t0)
	if err := folded.Apply(roundTrip(t, domain.SessionUse("u1", "s1", at))); err != nil {
		t.Fatal(err)
	}
	if got, want := s.WithUse(at).Current(at), folded.Current(at); got != want || !got.IdleExpiresAt.Equal(at.Add(30*domain.Day)) {
		t.Fatalf("WithUse = %+v, folding the use gives %+v", got, want)
	}
	for _, now := range []time.Time{at, at.Add(time.Hour), at.Add(31 * domain.Day), t0.Add(-time.Hour)} {
		if got, want := s.CurrentWithUse(at, now), folded.Current(now); got != want {
			t.Fatalf("CurrentWithUse(%s) = %+v, folding the use gives %+v", now, got, want)
		}
	}
	if !s.LastUseAt().Equal(t0) {
		t.Fatal("WithUse or CurrentWithUse changed the session itself")
	}
}
