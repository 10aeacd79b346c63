package command

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/handlerstest"
	"github.com/sessionledger/ledger/handlers/ports"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// testThrottle throttles after three failures: 10 s, 20 s, 40 s, 60 s.
var testThrottle = domain.LoginThrottle{After: 3, Window: time.Hour, Base: 10 * time.Second, Max: time.Minute}

type fixture struct {
	unknown *UnknownEmails
	ledger  *handlerstest.Ledger
	hasher  *handlerstest.Hasher
	secrets *handlerstest.Secrets
	users   *Users
	h       Handlers
	now     time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fx := &fixture{ledger: handlerstest.NewLedger(), hasher: &handlerstest.Hasher{}, secrets: handlerstest.NewSecrets(), now: t0}
	now := func() time.Time { return fx.now }
	var err error
	if fx.users, err = NewUsers(fx.ledger, fx.ledger, now); err != nil {
		t.Fatal(err)
	}
	ids := 0
	if fx.unknown, err = NewUnknownEmails(testThrottle, 2, fx.ledger, now); err != nil {
		t.Fatal(err)
	}
	fx.h, err = New(Deps{Users: fx.users, Log: fx.ledger, Hasher: fx.hasher, Creds: fx.ledger, Policy: domain.DefaultPolicy(),
		Throttle: testThrottle, Unknown: fx.unknown, Secrets: fx.secrets,
		Now: now, NewID: func() string { ids++; return fmt.Sprintf("id-%d", ids) }})
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

func (fx *fixture) signup(t *testing.T, email string) Issued {
	t.Helper()
	is, err := fx.h.Signup.Handle(context.Background(), Credentials{Email: email, Password: "a good password", KeepLoggedIn: true})
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func TestNewRefusesMissingDependencies(t *testing.T) {
	if _, err := New(Deps{}); err == nil {
		t.Fatal("New accepted no dependencies")
	}
	if _, err := NewUsers(nil, handlerstest.NewLedger(), time.Now); err == nil {
		t.Fatal("NewUsers accepted a nil reader")
	}
}

// TestUnknownEmailCostsADummyHash: a login for an unknown email spends one
// argon2id run on the dummy hash (so it takes as long as a wrong
// password), verifies nothing, and answers exactly like a wrong password;
// the wrong password is a login_failed on the user's history, the unknown
// email only a count in the next tally.
func TestUnknownEmailCostsADummyHash(t *testing.T) {
	fx := newFixture(t)
	fx.signup(t, "known@example.com")
	fx.hasher.Verifies.Store(0)
	_, unknownErr := fx.h.Login.Handle(context.Background(), Credentials{Email: "nobody@example.com", Password: "whatever it is"})
	if !errors.Is(unknownErr, domain.ErrInvalidCredentials) || fx.hasher.Burns.Load() != 1 || fx.hasher.Verifies.Load() != 0 {
		t.Fatalf("unknown email: err %v, burns %d, verifies %d; want invalid credentials after one burn", unknownErr, fx.hasher.Burns.Load(), fx.hasher.Verifies.Load())
	}
	_, wrongErr := fx.h.Login.Handle(context.Background(), Credentials{Email: "known@example.com", Password: "not the password"})
	if !errors.Is(wrongErr, domain.ErrInvalidCredentials) || unknownErr.Error() != wrongErr.Error() || fx.hasher.Verifies.Load() != 1 {
		t.Fatalf("wrong password: %v (unknown email: %v), verifies %d", wrongErr, unknownErr, fx.hasher.Verifies.Load())
	}
	last := fx.ledger.Appended()[len(fx.ledger.Appended())-1]
	p, _ := domain.DecodePayload[domain.LoginFailed](last)
	if last.Type != domain.EventLoginFailed || last.UserID != "id-1" || p.Reason != domain.LoginFailedWrongPassword || p.InARow != 1 || strings.Contains(string(last.Payload), "not the password") {
		t.Errorf("last event %s user %q payload %s; want the user's first login_failed", last.Type, last.UserID, last.Payload)
	}
	if len(fx.ledger.Facts()) != 0 {
		t.Fatalf("%d facts recorded before the tally, want none", len(fx.ledger.Facts()))
	}
	if err := fx.unknown.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(fx.ledger.Facts()) != 1 {
		t.Fatalf("%d facts after the flush, want one tally", len(fx.ledger.Facts()))
	}
	tally, _ := domain.DecodePayload[domain.LoginFailuresTallied](fx.ledger.Facts()[0].Event)
	if e := fx.ledger.Facts()[0].Event; e.Type != domain.EventLoginFailuresTallied || e.UserID != "" || tally.Failures != 1 || tally.Emails != 1 || strings.Contains(string(e.Payload), "nobody") {
		t.Fatalf("tally %s %s", e.Type, e.Payload)
	}
}

// TestThrottleIsDecidedFromTheHistory: the third wrong password throttles
// the account with a login_throttled event; while it holds, even the right
// password is refused without a password check or an event; every further
// failure doubles it; a success starts over. An unknown email is answered
// the same way at every step.
func TestThrottleIsDecidedFromTheHistory(t *testing.T) {
	fx := newFixture(t)
	fx.signup(t, "victim@example.com")
	login := func(email, pw string) error {
		_, err := fx.h.Login.Handle(context.Background(), Credentials{Email: email, Password: pw})
		return err
	}
	retryAfter := func(err error) time.Duration {
		var te *domain.ThrottledError
		if !errors.As(err, &te) {
			t.Fatalf("want a throttle, got %v", err)
		}
		return te.RetryAfter()
	}
	for i := 1; i <= 3; i++ {
		for _, email := range []string{"victim@example.com", "ghost@example.com"} {
			if err := login(email, "wrong password"); !errors.Is(err, domain.ErrInvalidCredentials) {
				t.Fatalf("%s attempt %d: %v", email, i, err)
			}
		}
		fx.now = fx.now.Add(time.Second)
	}
	if last := fx.ledger.Appended()[len(fx.ledger.Appended())-1]; last.Type != domain.EventLoginThrottled {
		t.Fatalf("third failure appended %s, want login_throttled", last.Type)
	}
	events, verifies, burns := len(fx.ledger.Appended()), fx.hasher.Verifies.Load(), fx.hasher.Burns.Load()
	known, unknown := login("victim@example.com", "a good password"), login("ghost@example.com", "a good password")
	if d := retryAfter(known); d != 9*time.Second || retryAfter(unknown) != d {
		t.Fatalf("retry after %s and %s, want 9s for both", d, retryAfter(unknown))
	}
	if known.Error() != unknown.Error() || len(fx.ledger.Appended()) != events || fx.hasher.Verifies.Load() != verifies || fx.hasher.Burns.Load() != burns {
		t.Fatalf("a throttled login cost a check or an event, or answered differently: %v / %v", known, unknown)
	}
	fx.now = fx.now.Add(9 * time.Second)
	for _, email := range []string{"victim@example.com", "ghost@example.com"} {
		if err := login(email, "wrong again"); !errors.Is(err, domain.ErrInvalidCredentials) {
			t.Fatalf("%s after the throttle lifted: %v", email, err)
		}
		if d := retryAfter(login(email, "a good password")); d != 20*time.Second {
			t.Fatalf("%s: second throttle %s, want 20s", email, d)
		}
	}
	fx.now = fx.now.Add(20 * time.Second)
	if err := login("victim@example.com", "a good password"); err != nil {
		t.Fatalf("right password after the throttle: %v", err)
	}
	if f, _ := fx.ledger.LoginFailures("id-1"); !f.IsZero() {
		t.Fatalf("failures after a success: %+v", f)
	}
	if err := login("victim@example.com", "wrong"); !errors.Is(err, domain.ErrInvalidCredentials) {
		t.Fatalf("first failure after a success: %v", err)
	}
}

// TestConflictDecidesAgainOnFreshState: another instance starts a session
// between this instance's read and its append; the append conflicts, and
// the retry decides on the new state, so logout-others revokes that session
// too.
func TestConflictDecidesAgainOnFreshState(t *testing.T) {
	fx := newFixture(t)
	caller := fx.signup(t, "race@example.com")
	other, err := fx.h.Login.Handle(context.Background(), Credentials{Email: "race@example.com", Password: "a good password"})
	if err != nil {
		t.Fatal(err)
	}
	interloped := false
	fx.ledger.BeforeAppend(func(userID string) error {
		if interloped {
			return nil
		}
		interloped = true
		// "Another instance" logs in: the user's version moves on.
		fx.ledger.BeforeAppend(nil)
		if _, err := fx.h.Login.Handle(context.Background(), Credentials{Email: "race@example.com", Password: "a good password"}); err != nil {
			return err
		}
		fx.ledger.BeforeAppend(func(string) error { return nil })
		return nil
	})
	n, _, err := fx.h.LogoutOthers.Handle(context.Background(), SessionRef{UserID: caller.UserID, SessionID: caller.SessionID})
	if err != nil || n != 2 {
		t.Fatalf("logout-others across a conflict: revoked %d, err %v; want 2 (the session started meanwhile included)", n, err)
	}
	u, _, _ := fx.ledger.LoadUser(caller.UserID)
	if s, _ := u.Session(other.SessionID); s.Current(fx.now).Valid {
		t.Fatal("the other session survived logout-others")
	}
}

func TestEndlessContentionGivesUp(t *testing.T) {
	fx := newFixture(t)
	caller := fx.signup(t, "busy@example.com")
	fx.users.attempts = 3
	appends := 0
	fx.ledger.BeforeAppend(func(string) error { appends++; return ports.ErrConflict })
	_, err := fx.h.Logout.Handle(context.Background(), SessionRef{UserID: caller.UserID, SessionID: caller.SessionID})
	if !errors.Is(err, ErrTooMuchContention) || appends != 3 {
		t.Fatalf("err %v after %d appends, want ErrTooMuchContention after 3", err, appends)
	}
}

// TestRejectedWriteIsDecidedAgain: an event the projection rejected (signed
// with a key rotated out a moment before) is not reported as done.
func TestRejectedWriteIsDecidedAgain(t *testing.T) {
	fx := newFixture(t)
	caller := fx.signup(t, "rotate@example.com")
	fx.ledger.RejectNext(1)
	before := len(fx.ledger.Appended())
	if _, err := fx.h.Logout.Handle(context.Background(), SessionRef{UserID: caller.UserID, SessionID: caller.SessionID}); err != nil {
		t.Fatal(err)
	}
	// The first logout landed but was rejected; the second decision, on
	// the same state, appended it again, and that one counts.
	if got := len(fx.ledger.Appended()) - before; got != 1 || fx.ledger.Rejected() != 1 {
		t.Fatalf("%d accepted appends, %d rejected; want 1 and 1", got, fx.ledger.Rejected())
	}
	u, _, _ := fx.ledger.LoadUser(caller.UserID)
	if s, _ := u.Session(caller.SessionID); s.Current(fx.now).Reason != domain.ReasonRevokedLogout {
		t.Fatalf("session after the retried logout: %+v", s.Current(fx.now))
	}
}

func TestUpdateOfAnUnknownUserNeverDecides(t *testing.T) {
	fx := newFixture(t)
	called := false
	_, err := fx.users.Update(context.Background(), "ghost", func(*domain.User, time.Time) ([]domain.Event, error) {
		called = true
		return nil, nil
	})
	if !errors.Is(err, domain.ErrUserNotFound) || called {
		t.Fatalf("Update of an unknown user: err %v, decide called %v", err, called)
	}
	fx.signup(t, "twice@example.com")
	hashes := fx.hasher.Hashes.Load()
	_, err = fx.h.Signup.Handle(context.Background(), Credentials{Email: "TWICE@example.com", Password: "another password"})
	if !errors.Is(err, domain.ErrEmailTaken) {
		t.Fatalf("second signup: %v, want ErrEmailTaken", err)
	}
	if fx.hasher.Hashes.Load() != hashes+1 {
		t.Fatalf("a signup of a taken email ran %d hashes, want 1 like a new one: its timing would tell", fx.hasher.Hashes.Load()-hashes)
	}
}

// TestDecisionsNeverPredateTheHistory: on an instance whose clock is behind
// the user's last event, new events take that event's time.
func TestDecisionsNeverPredateTheHistory(t *testing.T) {
	fx := newFixture(t)
	caller := fx.signup(t, "slow@example.com")
	fx.now = t0.Add(-time.Minute) // this instance's clock is behind
	if _, err := fx.h.Logout.Handle(context.Background(), SessionRef{UserID: caller.UserID, SessionID: caller.SessionID}); err != nil {
		t.Fatal(err)
	}
	last := fx.ledger.Appended()[len(fx.ledger.Appended())-1]
	if last.Type != domain.EventSessionLoggedOut || last.Time.Before(t0) {
		t.Fatalf("logout decided at %s, before the history's last event at %s", last.Time, t0)
	}
}
