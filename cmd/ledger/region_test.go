package main

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// TestRegionMirror: an instance in another region reads a JetStream mirror
// of the ledger stream (created by the instance) while its writes go to the
// origin. Sequences mean the same on both, so min_seq works across them,
// and the optimistic-concurrency path (conflict → read the subject's last
// sequence on the origin → wait for the projection fed by the mirror)
// still settles every concurrent write.
func TestRegionMirror(t *testing.T) {
	parallelFault(t)
	c := startNATSCluster(t)
	clock := newClock()
	east := startLedger(t, t.TempDir(), clock, onCluster(c))
	west := startLedger(t, t.TempDir(), clock, onCluster(c), readingMirror("LEDGER_WEST"))
	if got := west.ll.read.StreamName(); got != "LEDGER_WEST" {
		t.Fatalf("west reads %s", got)
	}
	info, err := west.ll.read.JetStream().Stream(context.Background(), "LEDGER_WEST")
	if err != nil {
		t.Fatal(err)
	}
	if m := info.CachedInfo().Config.Mirror; m == nil || m.Name != "LEDGER" {
		t.Fatalf("LEDGER_WEST is not a mirror of LEDGER: %+v", info.CachedInfo().Config)
	}

	const email, pw = "region@example.com", "region password"
	// A signup in the west is appended to the origin and answered once the
	// west's own projection, fed by the mirror, holds it.
	r := doURL(t, west.URL(), "POST", "/v1/auth/signup", "", nil, creds{email, pw, true})
	if r.Status != 201 {
		t.Fatalf("signup in the west: %d %s", r.Status, r.Raw)
	}
	uid := r.str("response", "user_id")
	r = doURL(t, east.URL(), "POST", "/v1/auth/login", "", minSeq(seqOf(t, r)), creds{email, pw, true})
	if r.Status != 200 {
		t.Fatalf("login in the east with the west's signup seq: %d %s", r.Status, r.Raw)
	}
	tok := r.str("response", "token")
	r = doURL(t, east.URL(), "POST", "/v1/auth/logout", tok, nil, nil)
	if r.Status != 200 {
		t.Fatalf("logout in the east: %d %s", r.Status, r.Raw)
	}
	r = doURL(t, west.URL(), "GET", "/v1/validate?touch=false", tok, minSeq(seqOf(t, r)), nil)
	if r.Status != 401 || r.str("revoked_by") != "logout" {
		t.Fatalf("west after the east's logout, with min_seq: %d %s", r.Status, r.Raw)
	}

	// Concurrent logouts of one user's sessions from both regions collide
	// on the user's subject; each one still lands exactly once.
	var conflicts float64
	rounds := 0
	for rounds < 5 && conflicts == 0 {
		rounds++
		const perSide = 12
		var tokens []string
		for range 2 * perSide {
			t2, _ := east.login(t, email, pw, true)
			tokens = append(tokens, t2)
		}
		lastLogin := east.lastSeq(t)
		var wg sync.WaitGroup
		errs := make(chan error, len(tokens))
		for i, tk := range tokens {
			l := east
			if i%2 == 1 {
				l = west
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := request(context.Background(), l.URL(), "POST", "/v1/auth/logout", tk, minSeq(lastLogin), nil)
				if err != nil || r.Status != 200 {
					errs <- fmt.Errorf("logout %d: %d %s %v", i, r.Status, r.Raw, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		if t.Failed() {
			return
		}
		conflicts = metricValue(t, west, `ledger_appends_total{result="conflict"}`)
	}
	if conflicts == 0 {
		t.Fatalf("no append conflict in the west after %d rounds of concurrent logouts; the conflict path went untested", rounds)
	}

	counts := map[domain.EventType]int{}
	for _, e := range east.events(t, eventstore.UserSubject(uid)) {
		counts[e.Type]++
	}
	if counts[domain.EventSessionStarted] != counts[domain.EventSessionLoggedOut]+1 {
		t.Errorf("user history %v: every session but the signup's should be logged out once", counts)
	}
	converge(t, 30*time.Second, east, west)
	mirrorMatchesOrigin(t, east, west)
	report(t, "region mirror: %d conflicts in the west over %d round(s) of concurrent cross-region logouts, all settled; mirror holds the origin's sequences",
		int(conflicts), rounds)
}

// mirrorMatchesOrigin compares the streams message by message.
func mirrorMatchesOrigin(t *testing.T, origin, regional *testLedger) {
	t.Helper()
	type msg struct {
		subject string
		data    string
	}
	read := func(s *eventstore.Reader) map[uint64]msg {
		out := map[uint64]msg{}
		err := s.ReadFrom(context.Background(), 1, func(r eventstore.Record) error {
			out[r.Seq] = msg{r.Subject, string(r.Data)}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	want, got := read(origin.ll.store.Reader), read(regional.ll.read)
	if len(want) != len(got) {
		t.Fatalf("origin has %d messages, mirror %d", len(want), len(got))
	}
	for seq, m := range want {
		if got[seq] != m {
			t.Fatalf("seq %d differs between origin and mirror", seq)
		}
	}
}

// metricValue reads one sample from an instance's /metrics (0 if absent).
func metricValue(t *testing.T, l *testLedger, series string) float64 {
	t.Helper()
	r := doURL(t, l.URL(), "GET", "/metrics", "", nil, nil)
	sc := bufio.NewScanner(strings.NewReader(r.Raw))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// TestLiveSubscriptionHeals: the projection consumers are deleted out from
// under both instances, and later paused (wedged: still there, delivering
// nothing). Writes still reach both: a lost consumer is noticed at once, a
// wedged one by the freshness tracker, which sees the projection stall
// behind the stream; either way the subscription resumes from the
// checkpoint.
func TestLiveSubscriptionHeals(t *testing.T) {
	clock := newClock()
	a := startLedger(t, t.TempDir(), clock, listening, withMaxLag(time.Second))
	b := startLedger(t, t.TempDir(), clock, joining(a), withMaxLag(time.Second))
	const email, pw = "heal@example.com", "healing password"
	a.signup(t, email, pw, true)

	ctx := context.Background()
	stream, err := a.ll.store.JetStream().Stream(ctx, "LEDGER")
	if err != nil {
		t.Fatal(err)
	}
	// each applies f to every projection consumer and returns how many.
	each := func(f func(name string) error) int {
		n := 0
		for name := range stream.ConsumerNames(ctx).Name() {
			if strings.HasPrefix(name, "ledger-projection-") {
				if err := f(name); err != nil {
					t.Fatal(err)
				}
				n++
			}
		}
		return n
	}
	writes := func(what string) {
		t.Helper()
		for i := range 3 {
			r := b.do(t, "POST", "/v1/auth/login", "", creds{email, pw, true}) // waits for B's own projection
			if r.Status != 200 {
				t.Fatalf("%s: login %d on B: %d %s", what, i, r.Status, r.Raw)
			}
			tok := r.str("response", "token")
			r = doURL(t, a.URL(), "POST", "/v1/auth/logout", tok, minSeq(seqOf(t, r)), nil)
			if r.Status != 200 {
				t.Fatalf("%s: logout %d on A: %d %s", what, i, r.Status, r.Raw)
			}
			checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
				if v := b.verdict(t, tok); v.Reason != "TOKEN_REVOKED" {
					return fmt.Errorf("%s: B's verdict after logout %d on A: %+v, want TOKEN_REVOKED", what, i, v)
				}
				return nil
			})
		}
		converge(t, 30*time.Second, a, b)
	}

	if n := each(func(name string) error { return stream.DeleteConsumer(ctx, name) }); n != 2 {
		t.Fatalf("deleted %d projection consumers, want 2", n)
	}
	writes("consumers deleted")
	for name, l := range map[string]*testLedger{"A": a, "B": b} {
		if !strings.Contains(l.logs.String(), "projection consumer lost") {
			t.Errorf("%s did not notice its consumer was deleted", name)
		}
	}

	if n := each(func(name string) error {
		_, err := a.ll.store.JetStream().PauseConsumer(ctx, "LEDGER", name, time.Now().Add(time.Hour))
		return err
	}); n != 2 {
		t.Fatalf("paused %d projection consumers, want 2", n)
	}
	writes("consumers paused")
	for name, l := range map[string]*testLedger{"A": a, "B": b} {
		if !strings.Contains(l.logs.String(), "projection stalled behind the stream") {
			t.Errorf("%s did not notice its consumer was wedged", name)
		}
	}
}
