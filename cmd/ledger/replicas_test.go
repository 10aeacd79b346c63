package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// TestReplicasReadYourWrites: two instances on a 3-node cluster share one
// R3 stream. Every write answers with its sequence; a read sent to the
// other instance with that min_seq sees the write. Logout propagation time
// A→B is measured and reported; a late instance with an empty data dir
// catches up and ends with the same projection. The subtests share the
// cluster and the two instances only: each signs up its own user.
func TestReplicasReadYourWrites(t *testing.T) {
	parallelFault(t)
	c := startNATSCluster(t)
	clock := newClock()
	a := startLedger(t, t.TempDir(), clock, onCluster(c))
	b := startLedger(t, t.TempDir(), clock, onCluster(c))

	info, err := a.ll.store.JetStream().Stream(context.Background(), "LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("stream created with %d replicas on a cluster, want 3 (automatic)", r)
	}
	const pw = "replica password"

	t.Run("min_seq on every kind of request", func(t *testing.T) {
		const email = "ryw@example.com"
		r := a.do(t, "POST", "/v1/auth/signup", "", creds{email, pw, true})
		if r.Status != http.StatusCreated {
			t.Fatalf("signup: %s", r.Raw)
		}
		owner := r.str("response", "token")
		signupSeq := seqOf(t, r)
		// Login on B right after signup on A: the email must be known there.
		r = doURL(t, b.URL(), "POST", "/v1/auth/login", "", minSeq(signupSeq), creds{email, pw, true})
		if r.Status != 200 {
			t.Fatalf("login on B with min_seq of A's signup: %d %s", r.Status, r.Raw)
		}
		loginSeq := seqOf(t, r)
		if loginSeq <= signupSeq {
			t.Errorf("login seq %d not after signup seq %d", loginSeq, signupSeq)
		}
		tok := r.str("response", "token")
		// Logout-others on B revokes A's session; A sees it with min_seq.
		r = doURL(t, b.URL(), "POST", "/v1/auth/logout-others", tok, nil, nil)
		if r.Status != 200 || r.get("response", "revoked") != float64(1) {
			t.Fatalf("logout-others: %d %s", r.Status, r.Raw)
		}
		r = doURL(t, a.URL(), "GET", "/v1/validate?touch=false", owner, minSeq(seqOf(t, r)), nil)
		if r.Status != 401 || r.str("revoked_by") != "revoke_others" {
			t.Fatalf("A after logout-others on B: %d %s", r.Status, r.Raw)
		}
		// DELETE a session on A, seen on B through ?min_seq=.
		second, sid2 := a.login(t, email, pw, false)
		r = doURL(t, a.URL(), "DELETE", "/v1/sessions/"+sid2, tok, nil, nil)
		if r.Status != 200 {
			t.Fatalf("terminate: %d %s", r.Status, r.Raw)
		}
		r = doURL(t, b.URL(), "GET", fmt.Sprintf("/v1/validate?touch=false&min_seq=%d", seqOf(t, r)), second, nil, nil)
		if r.Status != 401 || r.str("revoked_by") != "terminated" {
			t.Fatalf("B after terminate on A: %d %s", r.Status, r.Raw)
		}
		// generate-api-token carries the seq too.
		r = doURL(t, b.URL(), "POST", "/api/1.1/wf/generate-api-token", "", nil, creds{email, pw, false})
		if r.Status != 200 {
			t.Fatalf("generate-api-token: %d %s", r.Status, r.Raw)
		}
		seqOf(t, r)
	})

	t.Run("malformed or unreachable min_seq", func(t *testing.T) {
		owner, _, _ := a.signup(t, "minseq@example.com", pw, true)
		for _, bad := range []string{"/v1/validate?min_seq=abc", "/v1/validate?min_seq=-1", "/v1/validate?min_seq="} {
			if r := doURL(t, b.URL(), "GET", bad, owner, nil, nil); r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
				t.Errorf("%s: %d %s", bad, r.Status, r.Raw)
			}
		}
		r := doURL(t, b.URL(), "GET", "/v1/validate", owner, map[string]string{"X-Ledger-Min-Seq": "1e3"}, nil)
		if r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
			t.Errorf("malformed header: %d %s", r.Status, r.Raw)
		}
		// A sequence nobody has written yet: nothing to wait for, 400 at
		// once. (The bounded wait for a sequence that exists but is not
		// applied yet: projections' TestFreshnessFailsClosed.)
		r = doURL(t, b.URL(), "GET", "/v1/validate", owner, minSeq(b.lastSeq(t)+1000), nil)
		if r.Status != 400 || r.str("reason") != "INVALID_REQUEST" || !strings.Contains(r.str("message"), "beyond the end") {
			t.Errorf("future min_seq: %d %s", r.Status, r.Raw)
		}
	})

	t.Run("logout propagation", func(t *testing.T) {
		// 120 sessions over 8 accounts: each stays under the live-session
		// cap, which would otherwise revoke the oldest.
		const accounts = 8
		for i := range accounts {
			a.signup(t, fmt.Sprintf("propagation-%d@example.com", i), pw, true)
		}
		const n = 120
		tokens := make([]string, n)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 2 {
					email := fmt.Sprintf("propagation-%d@example.com", i%accounts)
					r, err := request(context.Background(), a.URL(), "POST", "/v1/auth/login", "", nil, creds{email, pw, true})
					if err != nil || r.Status != 200 {
						errs <- fmt.Errorf("login %d: %d %s %v", i, r.Status, r.Raw, err)
						return
					}
					tokens[i] = r.str("response", "token")
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
		var prop, total []time.Duration
		for i, tok := range tokens {
			sent := time.Now()
			r := a.do(t, "POST", "/v1/auth/logout", tok, nil)
			if r.Status != 200 {
				t.Fatalf("logout %d: %d %s", i, r.Status, r.Raw)
			}
			seq := seqOf(t, r)
			acked := time.Now()
			if i%4 == 3 {
				// Read-your-writes: the first answer with min_seq is right.
				r := doURL(t, b.URL(), "GET", "/v1/validate?touch=false", tok, minSeq(seq), nil)
				if r.Status != 401 || r.str("revoked_by") != "logout" {
					t.Fatalf("B with min_seq %d after logout on A: %d %s", seq, r.Status, r.Raw)
				}
				continue
			}
			// Without min_seq: poll B until it says revoked.
			for {
				v := b.verdict(t, tok)
				if v.Reason == "TOKEN_REVOKED" {
					break
				}
				if v.Status != 200 {
					t.Fatalf("B verdict while waiting for logout %d: %+v", i, v)
				}
				if time.Since(acked) > 30*time.Second {
					t.Fatalf("logout %d (seq %d) never reached B", i, seq)
				}
			}
			prop = append(prop, time.Since(acked))
			total = append(total, time.Since(sent))
		}
		s, w := sortedDurations(prop), sortedDurations(total)
		report(t, "logout acked by A -> validate on B says revoked (3-node cluster, R3, %d logouts, B polled over HTTP): p50=%s p99=%s max=%s",
			len(s), percentile(s, .5).Round(time.Microsecond), percentile(s, .99).Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
		report(t, "logout sent to A -> validate on B says revoked (same %d logouts, includes the R3 write): p50=%s p99=%s max=%s",
			len(w), percentile(w, .5).Round(time.Microsecond), percentile(w, .99).Round(time.Microsecond), w[len(w)-1].Round(time.Microsecond))
	})

	t.Run("late instance catches up", func(t *testing.T) {
		// Sessions ended in every way, on both instances, for the late
		// instance to know about. Each write waits for the one before it
		// (min_seq), whichever instance made it.
		const email = "late@example.com"
		var last uint64
		write := func(l *testLedger, method, path, token string, body any) response {
			t.Helper()
			var header map[string]string
			if last > 0 {
				header = minSeq(last)
			}
			r := doURL(t, l.URL(), method, path, token, header, body)
			if r.Status/100 != 2 {
				t.Fatalf("%s %s on %s: %d %s", method, path, l.URL(), r.Status, r.Raw)
			}
			last = seqOf(t, r)
			return r
		}
		keeper := write(a, "POST", "/v1/auth/signup", "", creds{email, pw, true}).str("response", "token")
		var ended []string
		for i := range 6 {
			tok := write(a, "POST", "/v1/auth/login", "", creds{email, pw, i%2 == 0}).str("response", "token")
			via := a
			if i%2 == 1 {
				via = b
			}
			write(via, "POST", "/v1/auth/logout", tok, nil)
			ended = append(ended, tok)
		}
		r := write(a, "POST", "/v1/auth/login", "", creds{email, pw, true})
		write(b, "DELETE", "/v1/sessions/"+r.str("response", "session_id"), keeper, nil)
		ended = append(ended, r.str("response", "token"))
		for range 2 {
			ended = append(ended, write(b, "POST", "/v1/auth/login", "", creds{email, pw, true}).str("response", "token"))
		}
		if r := write(a, "POST", "/v1/auth/logout-others", keeper, nil); r.get("response", "revoked") != float64(2) {
			t.Fatalf("logout-others: %d %s, want 2 revoked", r.Status, r.Raw)
		}
		// Bulk history for a measurable catch-up: uses of one live session.
		live, _ := a.login(t, email, pw, true)
		sess, err := a.proj.Session(sessionIDOf(t, live))
		if err != nil {
			t.Fatal(err)
		}
		appendUses(t, a, sess.UserID(), sess.ID(), clock.Now(), 4000)
		converge(t, 60*time.Second, a, b)
		start := time.Now()
		late := startLedger(t, t.TempDir(), clock, onCluster(c))
		elapsed := time.Since(start)
		applied := late.proj.Applied()
		report(t, "late instance with an empty data dir: caught up %d events in %s at start-up (%.0f events/s, includes start-up)",
			applied, elapsed.Round(time.Millisecond), float64(applied)/elapsed.Seconds())
		converge(t, 60*time.Second, a, b, late)
		for i, tok := range ended {
			want := a.verdict(t, tok)
			if want.Reason != "TOKEN_REVOKED" {
				t.Fatalf("A's verdict on ended session %d: %+v", i, want)
			}
			if v := late.verdict(t, tok); v != want {
				t.Errorf("late instance verdict on ended session %d: %+v, A says %+v", i, v, want)
			}
		}
		for _, tok := range []string{keeper, live} {
			if v := late.verdict(t, tok); v.Status != 200 || v != a.verdict(t, tok) {
				t.Errorf("late instance verdict on a live token: %+v, A says %+v", v, a.verdict(t, tok))
			}
		}
	})
}

func sessionIDOf(t *testing.T, token string) string {
	t.Helper()
	sid, _, err := domain.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	return sid
}
