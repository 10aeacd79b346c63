package projections_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/eventstoretest"
	"github.com/sessionledger/ledger/handlers/ports"
	"github.com/sessionledger/ledger/projections"
)

// userLog is a log of one registered user, "u1", with helpers to start
// sessions on it.
type userLog struct {
	*eventstoretest.Log
	user   *domain.User
	events []domain.Event // u1's events as appended, for the domain's own replay
	n      byte
}

func newUserLog(t *testing.T) *userLog {
	l := &userLog{Log: eventstoretest.NewLog(t, eventstoretest.Key(t, 1), t0), user: domain.NewUser("u1", "a@example.com", "hash", nil)}
	reg, err := domain.Register("u1", "a@example.com", "v1.sealed", "hash", t0)
	if err != nil {
		t.Fatal(err)
	}
	l.add(t, reg)
	return l
}

func (l *userLog) add(t *testing.T, e domain.Event) {
	t.Helper()
	r := l.Add(t, eventstore.UserSubject("u1"), e)
	stored, err := domain.DecodeEvent(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	l.events = append(l.events, stored)
}

func (l *userLog) start(t *testing.T, at time.Time, p domain.Policy) string {
	t.Helper()
	l.n++
	_, sid, h, err := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{l.n}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	l.add(t, l.user.StartSession(sid, h, "password", true, false, at, p))
	return sid
}

// TestWritesLoadOnlyLiveSessions: after many logouts, the user every write
// loads holds only the live sessions, while the all-sessions list still
// has every one, newest first; a session asked for by id is loaded dead or
// alive, if it is the user's.
func TestWritesLoadOnlyLiveSessions(t *testing.T) {
	l := newUserLog(t)
	p := domain.DefaultPolicy()
	var sids []string
	for i := range 40 {
		sids = append(sids, l.start(t, t0.Add(time.Duration(i)*time.Minute), p))
	}
	for i, sid := range sids[:35] {
		l.add(t, logout("u1", sid, t0.Add(time.Hour+time.Duration(i)*time.Second)))
	}
	proj := open(t, t.TempDir(), l.Ring())
	defer proj.Close()
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	u, _, err := proj.LoadUser("u1")
	if err != nil || u.SessionCount() != 5 {
		t.Fatalf("LoadUser after 35 logouts of 40 sessions: %d sessions (%v), want the 5 live ones", u.SessionCount(), err)
	}
	if u, _, _ := proj.LoadUser("u1", sids[0], "0123456789abcdef0123456789abcdef"); u.SessionCount() != 6 {
		t.Fatalf("LoadUser naming a dead session and an unknown one: %d sessions, want 6", u.SessionCount())
	}
	if _, ok, err := u.Terminate(sids[39], sids[0], t0.Add(2*time.Hour)); err == nil || ok {
		t.Fatalf("terminate of a pruned session the user was not loaded with: ok %v err %v, want not found", ok, err)
	}
	if u, _, _ := proj.LoadUser("u1", sids[0]); true {
		if _, ok, err := u.Terminate(sids[39], sids[0], t0.Add(2*time.Hour)); err != nil || ok {
			t.Fatalf("terminate of a dead session: ok %v err %v, want a no-op", ok, err)
		}
	}

	all, more, err := proj.UserSessions("u1", false, nil, 100, nil)
	if err != nil || more || len(all) != 40 {
		t.Fatalf("all sessions: %d (more %v, %v), want 40", len(all), more, err)
	}
	for i, s := range all {
		if s.ID() != sids[39-i] {
			t.Fatalf("all sessions not newest first at %d: %s, want %s", i, s.ID(), sids[39-i])
		}
	}
	// Pages by position: no duplicates, nothing missing.
	var walked []string
	var after *ports.SessionPosition
	for {
		page, more, err := proj.UserSessions("u1", false, after, 7, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page {
			walked = append(walked, s.ID())
		}
		if !more {
			break
		}
		last := page[len(page)-1]
		after = &ports.SessionPosition{StartedAt: last.StartedAt(), SessionID: last.ID()}
	}
	want := slices.Clone(sids)
	slices.Reverse(want)
	if !slices.Equal(walked, want) {
		t.Fatalf("paged walk: %d sessions, want the 40 newest first", len(walked))
	}
	live := func(s *domain.Session) bool { return s.Current(t0.Add(2 * time.Hour)).Valid }
	if hot, more, err := proj.UserSessions("u1", true, nil, 100, live); err != nil || more || len(hot) != 5 || hot[0].ID() != sids[39] {
		t.Fatalf("live sessions: %d (more %v, %v), want 5", len(hot), more, err)
	}
}

// TestLateUseRevivesAPrunedSession: a session idle-expired when a login
// pruned it is made live again by a use stamped before that login but
// applied after it; it must be back in what writes load, so that a
// revocation after it decides what the log replay decides.
func TestLateUseRevivesAPrunedSession(t *testing.T) {
	l := newUserLog(t)
	p := domain.DefaultPolicy()
	old := l.start(t, t0, p)
	login := t0.Add(31 * domain.Day) // old is idle-expired (30 days) by now
	cur := l.start(t, login, p)
	proj := open(t, t.TempDir(), l.Ring())
	defer proj.Close()
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	if u, _, _ := proj.LoadUser("u1"); u.SessionCount() != 1 {
		t.Fatalf("after the login, %d sessions loaded, want only the live one", u.SessionCount())
	}
	l.add(t, domain.SessionUse("u1", old, t0.Add(29*domain.Day))) // late: before the login's time
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	u, version, err := proj.LoadUser("u1")
	if err != nil || u.SessionCount() != 2 {
		t.Fatalf("after a late use, %d sessions loaded (%v), want the revived one back", u.SessionCount(), err)
	}
	if !version.Time.Equal(login) {
		t.Fatalf("the user's time went from %s to %s: it must not go backwards", login, version.Time)
	}
	revokeAt := domain.NextEventTime(login.Add(time.Hour), version.Time)
	e, n, ok, err := u.RevokeOthers(cur, revokeAt)
	if err != nil || !ok || n != 1 {
		t.Fatalf("revoke others: %d %v %v, want the revived session revoked", n, ok, err)
	}
	l.add(t, e)
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	replay, err := domain.SessionAsOf(l.events, old, revokeAt.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if live := mustSession(t, proj, old).Current(revokeAt.Add(time.Second)); live.Reason != replay.Verdict.Reason || live.Reason != domain.ReasonRevokedOthers {
		t.Fatalf("live %q, replay %q, want both revoked:revoke_others", live.Reason, replay.Verdict.Reason)
	}
}

// TestEvictionsFold: a login at the limit, as the write side decides it,
// folds into revoked:session_limit for the evicted session.
func TestEvictionsFold(t *testing.T) {
	l := newUserLog(t)
	p := domain.DefaultPolicy()
	p.MaxSessionsPerUser = 2
	first := l.start(t, t0, p)
	l.start(t, t0.Add(time.Minute), p)
	proj := open(t, t.TempDir(), l.Ring())
	defer proj.Close()
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	u, _, _ := proj.LoadUser("u1")
	var h domain.TokenHash
	at := t0.Add(time.Hour)
	events := u.Login("0123456789abcdef0123456789abcdef", h, "password", false, false, at, p)
	if len(events) != 2 || events[0].SessionID != first {
		t.Fatalf("login at the limit: %+v", events)
	}
	for _, e := range events {
		l.add(t, e)
	}
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	if v := mustSession(t, proj, first).Current(at); v.Reason != domain.ReasonRevokedSessionLimit || !v.RevokedAt.Equal(at) {
		t.Fatalf("evicted session: %+v", v)
	}
	if u, _, _ := proj.LoadUser("u1"); u.SessionCount() != 2 {
		t.Fatalf("after the eviction, %d sessions loaded, want 2", u.SessionCount())
	}
}

// TestOldLayoutIsRefused: a projection that applied events under another
// key layout is not read.
func TestOldLayoutIsRefused(t *testing.T) {
	l := newUserLog(t)
	l.start(t, t0, domain.DefaultPolicy())
	dir := t.TempDir()
	proj := open(t, dir, l.Ring())
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	if err := proj.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Delete([]byte("mlayout"), pebble.Sync); err != nil { // what a version-1 projection looks like
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = projections.Open(dir, l.Ring(), nil, nil)
	var layout *projections.LayoutError
	if !errors.As(err, &layout) || layout.Found != 1 || layout.Want != projections.LayoutVersion || layout.Applied != uint64(len(l.Recs)) {
		t.Fatalf("open of a layout-1 projection: %v, want a LayoutError", err)
	}
	// A new projection is marked with the current layout.
	fresh := t.TempDir()
	open(t, fresh, l.Ring()).Close()
	open(t, fresh, l.Ring()).Close()
}

// TestLateUseOnTheUseSubjectRevivesAPrunedSession: the same with the use on
// the user's use subject, which the projection folds without reading the
// user's version; a use that is not late leaves what writes load as it was.
func TestLateUseOnTheUseSubjectRevivesAPrunedSession(t *testing.T) {
	l := newUserLog(t)
	p := domain.DefaultPolicy()
	old := l.start(t, t0, p)
	login := t0.Add(31 * domain.Day) // old is idle-expired (30 days) by now
	cur := l.start(t, login, p)
	proj := open(t, t.TempDir(), l.Ring())
	defer proj.Close()
	l.AddUse(t, domain.SessionUse("u1", cur, login.Add(time.Hour))) // not late
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	if u, _, _ := proj.LoadUser("u1"); u.SessionCount() != 1 {
		t.Fatalf("after the login and a use of the live session, %d sessions loaded, want only the live one", u.SessionCount())
	}
	if s := mustSession(t, proj, cur); !s.LastUseAt().Equal(login.Add(time.Hour)) {
		t.Fatalf("live session's last use %s, want the use's time", s.LastUseAt())
	}
	l.AddUse(t, domain.SessionUse("u1", old, t0.Add(29*domain.Day))) // late: before the login's time
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	u, version, err := proj.LoadUser("u1")
	if err != nil || u.SessionCount() != 2 {
		t.Fatalf("after a late use, %d sessions loaded (%v), want the revived one back", u.SessionCount(), err)
	}
	if !version.Time.Equal(login) {
		t.Fatalf("the user's time went from %s to %s: a use must not move it", login, version.Time)
	}
}

// TestSessionsAsStoredAreCached: what the projection stores (a live
// session, one used, one logged out) fits the validate cache, which
// answers exactly what Pebble does. A form the cache silently refused
// would send every validate to Pebble.
func TestSessionsAsStoredAreCached(t *testing.T) {
	l := newUserLog(t)
	p := domain.DefaultPolicy()
	live, used, out := l.start(t, t0, p), l.start(t, t0.Add(time.Minute), p), l.start(t, t0.Add(2*time.Minute), p)
	l.add(t, domain.SessionUse("u1", used, t0.Add(time.Hour)))
	proj := open(t, t.TempDir(), l.Ring())
	defer proj.Close()
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	u, _, err := proj.LoadUser("u1")
	if err != nil {
		t.Fatal(err)
	}
	logout, err := u.Logout(out, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	l.add(t, logout)
	if err := proj.ApplyBatch(l.Recs); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{live, used, out} {
		if proj.InSessionCache(id) {
			t.Fatalf("session %s cached before any read", id)
		}
		first := mustSession(t, proj, id).Snapshot() // from Pebble
		if !proj.InSessionCache(id) {
			t.Fatalf("session %s (%+v) was read but not cached", id, first)
		}
		if again := mustSession(t, proj, id).Snapshot(); again != first {
			t.Fatalf("the cache answered %+v, Pebble %+v", again, first)
		}
		state, err := proj.SessionState(id) // validate's read, from the cache
		if err != nil || state.Snapshot() != first {
			t.Fatalf("SessionState = %+v, %v; Session %+v", state.Snapshot(), err, first)
		}
	}
	if _, err := proj.SessionState("00000000000000000000000000000000"); !errors.Is(err, domain.ErrSessionNotFound) {
		t.Fatalf("SessionState of an unknown session: %v", err)
	}
	if s := mustSession(t, proj, out); s.Snapshot().RevokedBy != domain.ReasonRevokedLogout {
		t.Fatalf("logged-out session cached as %+v", s.Snapshot())
	}
}
