package command

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

func TestSignupSealsTheEmail(t *testing.T) {
	fx := newFixture(t)
	is := fx.signup(t, "Ann@Example.com")
	var reg domain.Event
	for _, e := range fx.ledger.Appended() {
		if strings.Contains(string(e.Payload), "example.com") {
			t.Fatalf("%s carries the email in clear: %s", e.Type, e.Payload)
		}
		if e.Type == domain.EventUserRegistered {
			reg = e
		}
	}
	p, err := domain.DecodePayload[domain.UserRegistered](reg)
	if err != nil {
		t.Fatal(err)
	}
	if p.EmailHash != domain.EmailHash("ann@example.com") {
		t.Fatalf("email_hash %q", p.EmailHash)
	}
	clear, err := fx.secrets.Open(context.Background(), is.UserID, SecretEmail, p.EmailSealed)
	if err != nil || string(clear) != "ann@example.com" {
		t.Fatalf("sealed email opens to %q, %v", clear, err)
	}
}

// TestEraseUser: the erasure revokes the user's live sessions, destroys
// its data key, frees the email for a new account, and the old password
// fails like an unknown email; erasing again appends nothing.
func TestEraseUser(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	first := fx.signup(t, "ann@example.com")
	second, err := fx.h.Login.Handle(ctx, Credentials{Email: "ann@example.com", Password: "a good password"})
	if err != nil {
		t.Fatal(err)
	}
	erase := EraseUserHandler{AdminDeps{Users: fx.users, Secrets: fx.secrets, Now: func() time.Time { return fx.now }}}
	fx.now = fx.now.Add(time.Minute)
	by := domain.Principal{KeyID: "k1"}
	out, err := erase.Handle(ctx, by, first.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if out.Revoked != 2 || out.Already || out.Seq == 0 {
		t.Fatalf("erasure %+v", out)
	}
	u, _, _ := fx.ledger.LoadUser(first.UserID)
	for _, sid := range []string{first.SessionID, second.SessionID} {
		s, _ := u.Session(sid)
		if v := s.Current(fx.now); v.Reason != domain.ReasonRevokedUserErased {
			t.Fatalf("session %s after erasure: %+v", sid, v)
		}
	}
	if _, err := fx.secrets.Seal(ctx, first.UserID, SecretEmail, []byte("x")); !errors.Is(err, ports.ErrErased) {
		t.Fatalf("data key after erasure: %v", err)
	}
	// The old password is refused as for an unknown email.
	if _, err := fx.h.Login.Handle(ctx, Credentials{Email: "ann@example.com", Password: "a good password"}); !errors.Is(err, domain.ErrInvalidCredentials) {
		t.Fatalf("login after erasure: %v", err)
	}
	n := len(fx.ledger.Appended())
	again, err := erase.Handle(ctx, by, first.UserID)
	if err != nil || !again.Already || len(fx.ledger.Appended()) != n {
		t.Fatalf("erasing again: %+v, %v (appended %d events)", again, err, len(fx.ledger.Appended())-n)
	}
	// The email signs up again, as another user.
	next := fx.signup(t, "ann@example.com")
	if next.UserID == first.UserID {
		t.Fatal("the new signup got the erased user's id")
	}
	if _, err := fx.h.Login.Handle(ctx, Credentials{Email: "ann@example.com", Password: "a good password"}); err != nil {
		t.Fatalf("login of the new account: %v", err)
	}
	if _, err := fx.signup2(ctx, "ann@example.com"); !errors.Is(err, domain.ErrEmailTaken) {
		t.Fatalf("a third signup: %v, want EMAIL_TAKEN", err)
	}
	if _, err := erase.Handle(ctx, by, "no-such-user"); !errors.Is(err, domain.ErrUserNotFound) {
		t.Fatalf("erasing an unknown user: %v", err)
	}
}

func (fx *fixture) signup2(ctx context.Context, email string) (Issued, error) {
	return fx.h.Signup.Handle(ctx, Credentials{Email: email, Password: "a good password"})
}
