package domain_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// TestMFADecisions: the ±1 step window, the replay rule, single-use
// tickets and recovery codes, decided from folded events alone.
func TestMFADecisions(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	cur := domain.TOTPStep(at)
	only := func(step int64) domain.TOTPCheck { return func(s int64) bool { return s == step } }
	raw, sid, th, _ := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{1}, 64)))
	_ = raw
	start := domain.NewUser("u", "u@example.com", "h", nil).StartSession(sid, th, domain.SessionMethodPassword, true, false, at, domain.DefaultPolicy())
	s, err := domain.SessionFromEvent(start)
	if err != nil {
		t.Fatal(err)
	}
	u := domain.NewUser("u", "u@example.com", "h", []*domain.Session{s})
	fold := func(u *domain.User, events ...domain.Event) *domain.User {
		m := u.MFA()
		for _, e := range events {
			if m, err = m.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
		return u.WithMFA(m)
	}
	e, err := u.StartMFAEnrolment(sid, "sealed", at)
	if err != nil {
		t.Fatal(err)
	}
	u = fold(u, e)
	codes, hashes, err := domain.NewRecoveryCodes(bytes.NewReader(bytes.Repeat([]byte{7, 200, 31}, 100)), 10)
	if err != nil || len(codes) != 10 || !strings.Contains(codes[0], "-") {
		t.Fatalf("recovery codes %v %v", codes, err)
	}
	if _, err := u.ConfirmMFA(sid, only(cur+2), hashes, at); err != domain.ErrMFACodeInvalid {
		t.Fatalf("a code two steps ahead confirmed: %v", err)
	}
	e, err = u.ConfirmMFA(sid, only(cur-1), hashes, at)
	if err != nil {
		t.Fatal(err)
	}
	u = fold(u, e)
	if !u.MFA().Enrolled() || u.MFA().LastStep != cur-1 || u.MFA().Pending != "" {
		t.Fatalf("after confirming: %+v", u.MFA())
	}
	r := domain.DefaultLoginThrottle()
	p := domain.DefaultPolicy()
	login := func(l domain.MFALogin) ([]domain.Event, bool, error) {
		_, sid2, th2, _ := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
		l.SessionID, l.TokenHash = sid2, th2
		events, _, ok, err := u.LoginWithSecondFactor(l, at, p, r)
		return events, ok, err
	}
	// Replay of the confirming step: a failure.
	if events, ok, err := login(domain.MFALogin{TOTP: only(cur - 1)}); ok || err != nil || events[0].Type != domain.EventMFAFailed {
		t.Fatalf("replay: %v %v %v", events, ok, err)
	}
	events, ok, err := login(domain.MFALogin{TOTP: only(cur + 1), KeepLoggedIn: true})
	if !ok || err != nil || events[0].Type != domain.EventMFAVerified || events[len(events)-1].Type != domain.EventSessionStarted {
		t.Fatalf("a code one step ahead: %v %v %v", events, ok, err)
	}
	if st, _ := domain.DecodePayload[domain.SessionStarted](events[len(events)-1]); !st.MFA || !st.MaxExpiresAt.Equal(at.Add(30*domain.Day)) {
		t.Fatalf("the MFA session: %+v", st)
	}
	u = fold(u, events[0])
	if _, ok, _ := login(domain.MFALogin{TOTP: only(cur)}); ok {
		t.Fatal("a step before the last used one was accepted")
	}
	// Tickets: open until used or expired.
	_, tHash, _ := domain.NewMFATicket(bytes.NewReader(bytes.Repeat([]byte{3}, 32)), "u")
	u = fold(u, u.ChallengeMFA(tHash, false, at))
	events, ok, _ = login(domain.MFALogin{Ticket: &tHash, RecoveryCode: domain.HashRecoveryCode(strings.ToUpper(codes[2]))})
	if !ok || events[0].Type != domain.EventRecoveryCodeUsed {
		t.Fatalf("a recovery code with a ticket: %v", events)
	}
	u = fold(u, events[0])
	if _, _, err := login(domain.MFALogin{Ticket: &tHash, RecoveryCode: domain.HashRecoveryCode(codes[3])}); err != domain.ErrMFATicketInvalid {
		t.Fatalf("a used ticket: %v", err)
	}
	if _, ok, _ := login(domain.MFALogin{RecoveryCode: domain.HashRecoveryCode(codes[2])}); ok {
		t.Fatal("a used recovery code was accepted")
	}
	u = fold(u, u.ChallengeMFA(tHash, false, at))
	late := at.Add(domain.MFATicketTTL)
	if _, _, _, err := u.LoginWithSecondFactor(domain.MFALogin{Ticket: &tHash, TOTP: only(domain.TOTPStep(late))}, late, p, r); err != domain.ErrMFATicketInvalid {
		t.Fatalf("an expired ticket: %v", err)
	}
}

func TestMFATicketFormat(t *testing.T) {
	raw, h, err := domain.NewMFATicket(bytes.NewReader(bytes.Repeat([]byte{5}, 32)), "01a20481-575f-7c74-9281-d8f250bc36fa")
	if err != nil {
		t.Fatal(err)
	}
	uid, h2, err := domain.ParseMFATicket(raw)
	if err != nil || uid != "01a20481-575f-7c74-9281-d8f250bc36fa" || h2 != h {
		t.Fatalf("parse %q: %q %v", raw, uid, err)
	}
	for _, bad := range []string{"", "mft_", "mft_u.", "slt_u.AAAA", raw[:len(raw)-1], raw + "A", "mft_." + raw[strings.LastIndexByte(raw, '.')+1:]} {
		if _, _, err := domain.ParseMFATicket(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
