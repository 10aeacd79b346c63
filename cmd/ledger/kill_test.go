package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// TestReplicasKill9ResumesFromCheckpoint: a `ledger serve` process on the
// cluster is killed with SIGKILL in the middle of writes and started again
// on the same data dir. It resumes from its Pebble checkpoint (not from
// zero), no token revoked before the kill validates after the restart,
// every acknowledged write is in the log, and it converges with the other
// instance.
func TestReplicasKill9ResumesFromCheckpoint(t *testing.T) {
	parallelFault(t)
	if testing.Short() {
		t.Skip("builds and runs the ledger binary")
	}
	buildLedger(t)
	c := startNATSCluster(t)
	// The child process runs on the wall clock; so does A here, so both
	// give the same verdicts.
	a := startLedger(t, t.TempDir(), newClock(), onCluster(c), func(cfg *ServiceConfig) { cfg.Now = time.Now })
	dataDir := t.TempDir()
	args := append(c.procArgs(dataDir), "--max-lag", "2s")
	p := startProc(t, args...)

	const email, pw = "kill@example.com", "kill nine password"
	r := p.do(t, "POST", "/v1/auth/signup", "", nil, creds{email, pw, true})
	if r.Status != 201 {
		t.Fatalf("signup on the process: %d %s", r.Status, r.Raw)
	}
	var revoked []string
	for i := range 4 {
		r := p.do(t, "POST", "/v1/auth/login", "", nil, creds{email, pw, true})
		if r.Status != 200 {
			t.Fatalf("login: %d %s", r.Status, r.Raw)
		}
		tok := r.str("response", "token")
		// Half are revoked through the process, half through A.
		via := p.url
		if i%2 == 1 {
			via = a.URL()
		}
		r = doURL(t, via, "POST", "/v1/auth/logout", tok, minSeq(seqOf(t, r)), nil)
		if r.Status != 200 {
			t.Fatalf("logout via %s: %d %s", via, r.Status, r.Raw)
		}
		revoked = append(revoked, tok)
	}

	// The projection commits without fsync and Pebble hands its WAL to the
	// OS a 32 KiB block at a time, so a killed process keeps a checkpoint
	// only once it has written more than that: give it some history.
	live := r.str("response", "session_id")
	appendUses(t, a, r.str("response", "user_id"), live, time.Now(), 3000)
	last := a.lastSeq(t)
	checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		r := p.do(t, "GET", "/readyz", "", nil, nil)
		if got, _ := r.get("applied_seq").(float64); uint64(got) < last {
			return fmt.Errorf("the process's applied_seq is %v, want at least %d: %d %s", r.get("applied_seq"), last, r.Status, r.Raw)
		}
		return nil
	})

	w := newWriteLoad(email, pw)
	w.start(p.url, 2)
	w.waitCycles(t, 60*time.Second, "writes on the process", 0, 4)
	p.kill()
	w.finish(t)
	for _, tok := range w.tokens {
		revoked = append(revoked, tok)
	}
	_, checkpoint := offlineDigest(t, dataDir)
	if checkpoint == 0 {
		t.Fatal("no checkpoint survived the kill")
	}

	p = startProc(t, args...)
	// The first answers after the restart already know every revocation.
	for i, tok := range revoked {
		if r := p.do(t, "GET", "/v1/validate?touch=false", tok, nil, nil); r.Status == 200 || r.str("reason") != "TOKEN_REVOKED" {
			t.Errorf("token %d revoked before the kill: after restart %d %s", i, r.Status, r.Raw)
		}
	}
	rec := p.logRecord("catching up projection")
	if rec == nil {
		t.Fatal("no catch-up log line")
	}
	if got, _ := rec["applied"].(float64); uint64(got) != checkpoint {
		t.Errorf("restart caught up from %v, want the checkpoint %d", rec["applied"], checkpoint)
	}
	w.checkInLog(t, a)

	last = a.lastSeq(t)
	checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		r := p.do(t, "GET", "/readyz", "", nil, nil)
		if got, _ := r.get("applied_seq").(float64); r.Status != 200 || uint64(got) != last {
			return fmt.Errorf("the restarted process's /readyz: %d, applied_seq %v, want 200 and %d: %s", r.Status, r.get("applied_seq"), last, r.Raw)
		}
		return nil
	})
	report(t, "kill -9 during writes: checkpoint %d of %d survived; restart resumed from it and caught up; %d acked cycles before the kill, %d revoked tokens rechecked",
		checkpoint, last, len(w.logouts), len(revoked))
	p.stop(t)
	checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if got, want := a.proj.Applied(), a.lastSeq(t); got != want {
			return fmt.Errorf("A applied_seq %d, want the stream's last seq %d", got, want)
		}
		return nil
	})
	want, at, err := a.proj.DigestAt()
	if err != nil {
		t.Fatal(err)
	}
	got, gotAt := offlineDigest(t, dataDir)
	if gotAt != at || got != want {
		t.Fatalf("restarted process: digest %s at %d, A: %s at %d", got, gotAt, want, at)
	}
}

// appendUses writes n session_used events for one session straight to the
// stream, one second apart: bulk history that every projection applies.
func appendUses(t *testing.T, l *testLedger, userID, sessionID string, from time.Time, n int) {
	t.Helper()
	const chunk = 1000
	at := from
	for done := 0; done < n; done += chunk {
		pubs := make([]eventstore.Publication, min(chunk, n-done))
		for i := range pubs {
			at = at.Add(time.Second)
			e := domain.SessionUse(userID, sessionID, at)
			e.ID = newID()
			pubs[i] = eventstore.Publication{Subject: eventstore.UserSubject(userID), Event: e}
		}
		if stored, err := l.ll.store.AppendFacts(context.Background(), pubs); err != nil || stored != len(pubs) {
			t.Fatalf("bulk append: %d stored, %v", stored, err)
		}
	}
}
