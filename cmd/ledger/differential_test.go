package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/handlers/query"
)

var (
	longDifferential = flag.Bool("ledger.long", false, "run the long differential check (thousands of users over simulated years)")
	differentialSeed = flag.Int64("ledger.seed", 0, "seed of the differential workload; 0 picks one from the clock (every run prints the seed it used)")
)

// workloadSeed is the seed of a random workload: -ledger.seed, or one from
// the clock. It logs it, and if the test fails, logs how to replay it, after
// every other clean-up (a failure while stopping the ledger included).
func workloadSeed(t *testing.T) int64 {
	t.Helper()
	seed := *differentialSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	replay := fmt.Sprintf("-ledger.seed=%d", seed)
	if *longDifferential {
		replay += " -ledger.long"
	}
	t.Logf("seed %d (replay with %s)", seed, replay)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d: replay with go test ./cmd/ledger -run '^%s$' %s", seed, t.Name(), replay)
		}
	})
	return seed
}

// TestDifferentialLiveVersusReplay drives a random workload over simulated
// months with an injected clock, records every verdict the live service
// gives, then recomputes each one from the log alone (as an auditor would)
// and requires zero mismatches.
func TestDifferentialLiveVersusReplay(t *testing.T) {
	users, ops := 60, 1500
	if *longDifferential {
		users, ops = 2000, 40000
	}
	seed := workloadSeed(t)
	t.Logf("%d users, %d operations", users, ops)
	rnd := rand.New(rand.NewPCG(uint64(seed), 42))

	cheap := func(c *ServiceConfig) {
		// Verdicts, not hashing, are under test here.
		c.PasswordParams = argon2id.Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}
		c.UseGranularity = time.Hour
		// Low enough that logins meet the live-session limit.
		c.Policy.MaxSessionsPerUser = 3
	}
	// Codes and links go to a real HTTP server (the signed webhook).
	const hookSecret = "differential-webhook-0123456789"
	hook, notices := webhookSink(t, hookSecret)
	l := startLedger(t, t.TempDir(), newClock(), cheap, viaWebhook(t, hook, hookSecret))
	start := l.clock.Now()
	ctx := context.Background()

	type session struct{ token, sid, uid, email string }
	var sessions []session
	emails := map[string]string{} // email -> user id
	var emailList []string
	type observation struct {
		s       session
		at      time.Time
		verdict verdict
	}
	var observed []observation
	const pw = "differential pw"
	// The second factor: users enrolled in TOTP (uid -> secret) log in
	// with a real code (in the body, or through a ticket), always on a
	// step after the last one used (the clock moves a step first).
	secrets := map[string]string{}
	// Sessions started by an emailed code or link: session id -> method.
	methods := map[string]string{}
	resets := 0
	login := func(email string, keep bool) (string, string) {
		secret, enrolled := secrets[emails[email]]
		if !enrolled {
			return l.login(t, email, pw, keep)
		}
		l.clock.Advance(30 * time.Second)
		c := code(t, secret, l.clock.Now())
		var r response
		if rnd.IntN(2) == 0 {
			r = l.do(t, "POST", "/v1/auth/login", "", map[string]any{"email": email, "password": pw, "keep_logged_in": keep, "totp_code": c})
		} else {
			r = l.redeem(t, l.ticket(t, "/v1/auth/login", email, pw, &keep), "code", c)
		}
		if r.Status != 200 {
			t.Fatalf("seed %d: MFA login of %s: %d %s", seed, email, r.Status, r.Raw)
		}
		return r.str("response", "token"), r.str("response", "session_id")
	}
	// challenge requests a code and link for a known email and returns the
	// notice delivered. Every request waits out the answer's 100 ms floor
	// unless the client goes away: the notice is sent once the request is
	// in the log, so on its arrival the request is dropped and the floor
	// with it (which keeps the run to a couple of seconds).
	challenge := func(path, email string) map[string]string {
		// One request per account and purpose a minute: past it.
		l.clock.Advance(61 * time.Second)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			r, err := request(rctx, l.URL(), "POST", path, "", nil, map[string]string{"email": email})
			if err == nil && r.Status != 202 {
				err = fmt.Errorf("%d %s", r.Status, r.Raw)
			}
			done <- err
		}()
		var n map[string]string
		select {
		case n = <-notices:
			cancel()
			if err := <-done; err != nil && !errors.Is(err, errNoAnswer) {
				t.Fatalf("seed %d: %s %s: %v", seed, path, email, err)
			}
		case err := <-done: // answered before the notice came
			cancel()
			if err != nil {
				t.Fatalf("seed %d: %s %s: %v", seed, path, email, err)
			}
			n = nextNotice(t, notices)
		}
		if n["email"] != email {
			t.Fatalf("seed %d: %s for %s: notice %v", seed, path, email, n)
		}
		return n
	}
	pick := func() (session, bool) {
		if len(sessions) == 0 {
			return session{}, false
		}
		return sessions[rnd.IntN(len(sessions))], true
	}
	// settle waits until every write so far, including uses still in the
	// use queue, is applied, so that each observation is of a settled state.
	settle := func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := l.uses.Flush(wctx); err != nil {
			t.Fatalf("seed %d: flush uses: %v", seed, err)
		}
		if err := l.proj.WaitFor(wctx, l.lastSeq(t)); err != nil {
			t.Fatalf("seed %d: wait for the projection: %v", seed, err)
		}
	}
	// Gaps shrink with the number of operations so that any run covers a
	// few simulated years: long enough for every lifetime to run out, short
	// enough that sessions meet each other.
	scale := min(1, 1500/float64(ops))
	gap := func(d time.Duration) time.Duration {
		return max(time.Second, time.Duration(float64(d)*scale).Truncate(time.Second))
	}
	for i := 0; i < ops; i++ {
		switch g := rnd.IntN(100); {
		case g < 70:
			l.clock.Advance(gap(time.Duration(1+rnd.IntN(3600)) * time.Second))
		case g < 97:
			l.clock.Advance(gap(time.Duration(1+rnd.IntN(24)) * time.Hour))
		default:
			l.clock.Advance(gap(time.Duration(1+rnd.IntN(10)) * domain.Day))
		}
		keep := rnd.IntN(3) > 0
		switch a := rnd.IntN(100); {
		case a < 10 && len(emailList) < users || len(emailList) == 0:
			email := fmt.Sprintf("user%d@example.com", len(emailList))
			tok, uid, sid := l.signup(t, email, pw, keep)
			emails[email] = uid
			emailList = append(emailList, email)
			sessions = append(sessions, session{tok, sid, uid, email})
		case a < 25:
			email := emailList[rnd.IntN(len(emailList))]
			tok, sid := login(email, keep)
			sessions = append(sessions, session{tok, sid, emails[email], email})
		case a < 60:
			if s, ok := pick(); ok {
				l.do(t, "GET", "/v1/validate", s.token, nil) // touching: may record a use
			}
		case a < 68:
			if s, ok := pick(); ok {
				l.do(t, "POST", "/v1/auth/logout", s.token, nil)
			}
		case a < 72:
			if s, ok := pick(); ok {
				l.do(t, "POST", "/v1/auth/logout-others", s.token, nil)
			}
		case a < 76:
			if s, ok := pick(); ok {
				// Terminate another session of the same user, if any.
				for _, o := range sessions {
					if o.uid == s.uid && o.sid != s.sid {
						l.do(t, "DELETE", "/v1/sessions/"+o.sid, s.token, nil)
						break
					}
				}
			}
		case a < 78:
			// A burst of logins on one account: past the live-session
			// limit, each evicts the oldest live session.
			email := emailList[rnd.IntN(len(emailList))]
			for range 4 {
				l.clock.Advance(time.Second)
				tok, sid := login(email, keep)
				sessions = append(sessions, session{tok, sid, emails[email], email})
			}
		case a < 80:
			// An admin revokes one session (session_revoked_by_admin),
			// live or not.
			if s, ok := pick(); ok {
				l.withKey(t, "DELETE", "/v1/admin/sessions/"+s.sid, testAdminKey, map[string]string{"actor": "differential", "note": "one"})
			}
		case a < 81:
			// An admin revokes every live session of a user.
			if s, ok := pick(); ok {
				l.withKey(t, "POST", "/v1/admin/users/"+s.uid+"/revoke-sessions", testAdminKey, nil)
			}
		case a < 82:
			// An admin erases the account of a session's email (user_erased
			// revokes every live session of it), and the email signs up
			// again as a new user; the old sessions stay observed.
			if s, ok := pick(); ok {
				if r := l.withKey(t, "POST", "/v1/admin/users/"+emails[s.email]+"/erase", testAdminKey, nil); r.Status != 200 {
					t.Fatalf("seed %d: erase: %d %s", seed, r.Status, r.Raw)
				}
				l.clock.Advance(time.Second)
				tok, uid, sid := l.signup(t, s.email, pw, keep)
				emails[s.email] = uid
				sessions = append(sessions, session{tok, sid, uid, s.email})
			}
		case a < 85:
			// A password change (to the same password, so the workload's
			// logins go on) revokes the user's other live sessions
			// (password_changed), here one logged in just before.
			if s, ok := pick(); ok {
				tok, sid := login(s.email, keep)
				sessions = append(sessions, session{tok, sid, emails[s.email], s.email})
				if r := l.do(t, "POST", "/v1/auth/password", s.token, map[string]any{"current_password": pw, "new_password": pw}); r.Status != 200 && r.Status != 401 {
					t.Fatalf("seed %d: password change: %d %s", seed, r.Status, r.Raw)
				}
			}
		case a < 86:
			// A password reset (to the same password) by the emailed code
			// or the link: every session of the user is revoked
			// (password_reset), here one logged in just before too.
			if s, ok := pick(); ok {
				tok, sid := login(s.email, keep)
				sessions = append(sessions, session{tok, sid, emails[s.email], s.email})
				n := challenge("/v1/auth/password/reset-request", s.email)
				body := map[string]any{"email": s.email, "code": n["code"], "new_password": pw}
				if rnd.IntN(2) == 0 {
					body = map[string]any{"token": n["token"], "new_password": pw}
				}
				if r := l.do(t, "POST", "/v1/auth/password/reset", "", body); r.Status != 200 || r.get("response", "revoked") == float64(0) {
					t.Fatalf("seed %d: password reset: %d %s", seed, r.Status, r.Raw)
				}
				resets++
			}
		case a < 87:
			// A login by an emailed code (method email_code) or by the
			// magic link (magic_link).
			email := emailList[rnd.IntN(len(emailList))]
			n := challenge("/v1/auth/code/request", email)
			method := "email_code"
			var r response
			if rnd.IntN(2) == 0 {
				r = l.do(t, "POST", "/v1/auth/code/verify", "", map[string]any{"email": email, "code": n["code"], "keep_logged_in": keep})
			} else {
				method = "magic_link"
				r = l.do(t, "POST", "/v1/auth/magic", "", map[string]any{"token": n["token"], "keep_logged_in": keep})
			}
			if r.Status != 200 {
				t.Fatalf("seed %d: %s login of %s: %d %s", seed, method, email, r.Status, r.Raw)
			}
			sid := r.str("response", "session_id")
			sessions = append(sessions, session{r.str("response", "token"), sid, emails[email], email})
			methods[sid] = method
		case a < 89:
			// A user enrols in TOTP, with a fresh session (mfa_enrolled).
			email := emailList[rnd.IntN(len(emailList))]
			if _, enrolled := secrets[emails[email]]; !enrolled {
				tok, sid := login(email, keep)
				sessions = append(sessions, session{tok, sid, emails[email], email})
				l.clock.Advance(30 * time.Second)
				secrets[emails[email]], _ = l.enrol(t, tok)
			}
		case a < 90:
			// An enrolled user turns the second factor off.
			email := emailList[rnd.IntN(len(emailList))]
			if secret, enrolled := secrets[emails[email]]; enrolled {
				tok, sid := login(email, keep)
				sessions = append(sessions, session{tok, sid, emails[email], email})
				l.clock.Advance(30 * time.Second)
				if r := l.do(t, "DELETE", "/v1/mfa/totp", tok, map[string]string{"code": code(t, secret, l.clock.Now())}); r.Status != 200 {
					t.Fatalf("seed %d: disable: %d %s", seed, r.Status, r.Raw)
				}
				delete(secrets, emails[email])
			}
		}
		settle()
		for range 3 {
			if s, ok := pick(); ok {
				observed = append(observed, observation{s, l.clock.Now(), l.verdict(t, s.token)})
			}
		}
	}

	// Replay: the log alone, read per user, folded by the domain.
	history := map[string][]eventstore.StoredEvent{}
	mismatches := 0
	kinds := map[string]int{}
	byMethod := map[string]int{}
	for _, o := range observed {
		if m, ok := methods[o.s.sid]; ok {
			byMethod[m]++
		}
		stored, ok := history[o.s.uid]
		if !ok {
			var err error
			if stored, err = l.ll.store.UserHistory(ctx, o.s.uid); err != nil {
				t.Fatalf("seed %d: user history: %v", seed, err)
			}
			history[o.s.uid] = stored
		}
		res, err := query.AsOfFromHistory(stored, o.s.sid, o.at)
		if err != nil {
			t.Fatalf("seed %d: replay %s: %v", seed, o.s.sid, err)
		}
		replayed := verdictOf(res.Verdict)
		kinds[replayed.Reason+replayed.Detail]++
		if replayed != o.verdict {
			mismatches++
			if mismatches <= 10 {
				t.Errorf("seed %d: session %s at %s: live %+v, replayed %+v (%s)", seed, o.s.sid, o.at.Format(time.RFC3339), o.verdict, replayed, res.Summary)
			}
		}
	}
	uses, mfaLogins := 0, 0
	for _, stored := range history {
		for _, se := range stored {
			switch se.Event.Type {
			case domain.EventSessionUsed:
				uses++
			case domain.EventMFAVerified:
				mfaLogins++
			}
		}
	}
	t.Logf("%d verdicts compared over %s simulated, %d mismatches; verdict mix %v; %d uses recorded; %d MFA logins; %d password resets; verdicts of email sessions %v",
		len(observed), l.clock.Now().Sub(start).Round(time.Hour), mismatches, kinds, uses, mfaLogins, resets, byMethod)
	if mfaLogins == 0 {
		t.Errorf("seed %d: no MFA login among the observed users; the second factor is not exercised", seed)
	}
	for _, m := range []string{"email_code", "magic_link"} {
		if byMethod[m] == 0 {
			t.Errorf("seed %d: no verdict on a session of method %s; login by email is not exercised", seed, m)
		}
	}
	if uses == 0 {
		t.Errorf("seed %d: no session_used event was recorded; the idle rule is not exercised", seed)
	}
	if mismatches > 0 {
		t.Fatalf("seed %d: %d of %d verdicts differ between live validation and log replay", seed, mismatches, len(observed))
	}
	for _, k := range []string{"", "TOKEN_EXPIREDidle", "TOKEN_EXPIREDmax", "TOKEN_REVOKEDlogout", "TOKEN_REVOKEDsession_limit", "TOKEN_REVOKEDadmin", "TOKEN_REVOKEDpassword_changed", "TOKEN_REVOKEDpassword_reset", "TOKEN_REVOKEDuser_erased"} {
		if kinds[k] == 0 {
			t.Errorf("seed %d: the workload never produced verdict %q; it is not exercising the rules", seed, k)
		}
	}
}

// verdictOf renders a domain verdict the way the validate endpoint does.
func verdictOf(v domain.Verdict) verdict {
	if v.Valid {
		return verdict{Status: 200, Idle: v.IdleExpiresAt.Format(time.RFC3339), Max: v.MaxExpiresAt.Format(time.RFC3339)}
	}
	out := verdict{Status: 401, Detail: v.Reason.Detail()}
	switch v.Reason.Kind() {
	case "expired":
		out.Reason = "TOKEN_EXPIRED"
	case "revoked":
		out.Reason = "TOKEN_REVOKED"
	default:
		out.Reason = "TOKEN_INVALID"
	}
	return out
}
