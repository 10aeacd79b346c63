package main

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
)

// listAll walks GET /v1/sessions page by page (query holds limit, status)
// and returns the session ids in order, failing on a repeated one.
func listAll(t *testing.T, l *testLedger, token, query string) (ids []string, items []map[string]any, pages int) {
	t.Helper()
	seen := map[string]bool{}
	cursor := ""
	for {
		path := "/v1/sessions?" + query
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		r := l.do(t, "GET", path, token, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Raw)
		}
		pages++
		list, _ := r.get("sessions").([]any)
		for _, item := range list {
			m := item.(map[string]any)
			id, _ := m["session_id"].(string)
			if seen[id] {
				t.Fatalf("session %s listed twice (page %d)", id, pages)
			}
			seen[id] = true
			ids = append(ids, id)
			items = append(items, m)
		}
		next, has := r.Body["next_cursor"]
		if !has {
			return ids, items, pages
		}
		if cursor, _ = next.(string); cursor == "" || len(list) == 0 {
			t.Fatalf("page %d: next_cursor %v with %d sessions", pages, next, len(list))
		}
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
	}
}

// TestSessionListPages: the list walks the live sessions newest first, each
// exactly once, across pages; status=all adds the revoked ones; a bad
// limit, cursor or status is a 400 JSON error.
func TestSessionListPages(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	const pw = "pages password"
	tok, _, first := l.signup(t, "pages@example.com", pw, true)
	sids := []string{first}
	tokens := map[string]string{first: tok}
	for range 11 {
		l.clock.Advance(time.Second)
		tk, sid := l.login(t, "pages@example.com", pw, true)
		sids = append(sids, sid)
		tokens[sid] = tk
	}
	l.signup(t, "stranger@example.com", pw, true) // someone else's sessions never show
	revoked := map[string]bool{}
	for _, i := range []int{1, 4, 7} {
		if r := l.do(t, "POST", "/v1/auth/logout", tokens[sids[i]], nil); r.Status != 200 {
			t.Fatalf("logout: %d %s", r.Status, r.Raw)
		}
		revoked[sids[i]] = true
	}
	caller := tokens[sids[11]]
	var wantLive, wantAll []string
	for i := len(sids) - 1; i >= 0; i-- {
		wantAll = append(wantAll, sids[i])
		if !revoked[sids[i]] {
			wantLive = append(wantLive, sids[i])
		}
	}

	ids, items, pages := listAll(t, l, caller, "limit=4")
	if !slices.Equal(ids, wantLive) || pages != 3 {
		t.Fatalf("live sessions in %d pages: %v, want %v newest first in 3", pages, ids, wantLive)
	}
	for _, m := range items {
		if m["status"] != "active" || (m["current"] == true) != (m["session_id"] == sids[11]) {
			t.Errorf("live item %v", m)
		}
	}
	if ids, _, pages := listAll(t, l, caller, "limit=9"); !slices.Equal(ids, wantLive) || pages != 1 {
		t.Fatalf("a page of exactly the live sessions: %d pages, %v", pages, ids)
	}
	if ids, _, _ := listAll(t, l, caller, ""); !slices.Equal(ids, wantLive) {
		t.Fatalf("default limit: %v", ids)
	}
	ids, items, _ = listAll(t, l, caller, "limit=5&status=all")
	if !slices.Equal(ids, wantAll) {
		t.Fatalf("status=all: %v, want %v", ids, wantAll)
	}
	for _, m := range items {
		if revoked[m["session_id"].(string)] && (m["status"] != "revoked" || m["reason"] != "revoked:logout") {
			t.Errorf("revoked item %v", m)
		}
	}

	for _, q := range []string{"limit=0", "limit=201", "limit=ten", "limit=", "limit=-1", "limit=2&limit=3",
		"cursor=not-a-cursor", "cursor=" + url.QueryEscape(strings.Repeat("A", 59)), "status=active", "status=", "status=ALL"} {
		r := l.do(t, "GET", "/v1/sessions?"+q, caller, nil)
		if r.Status != http.StatusBadRequest || r.str("reason") != "INVALID_REQUEST" || r.get("statusCode") != float64(400) || r.str("message") == "" {
			t.Errorf("GET /v1/sessions?%s: %d %s, want a 400 INVALID_REQUEST", q, r.Status, r.Raw)
		}
	}
	if r := l.do(t, "GET", "/v1/sessions?limit=200", caller, nil); r.Status != 200 {
		t.Errorf("limit=200: %d %s", r.Status, r.Raw)
	}
}

// TestSessionLimitEvictsTheOldest: a login beyond --max-sessions-per-user
// revokes the oldest live session in the same decision; validate says
// revoked:session_limit, the as-of audit explains it with the eviction, and
// terminating the evicted session is a no-op as for any dead one.
func TestSessionLimitEvictsTheOldest(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock(), func(c *ServiceConfig) { c.Policy.MaxSessionsPerUser = 3 })
	const pw = "limit password"
	oldest, uid, oldestSID := l.signup(t, "limit@example.com", pw, true)
	var toks, sids []string
	for range 2 {
		l.clock.Advance(time.Minute)
		tk, sid := l.login(t, "limit@example.com", pw, true)
		toks, sids = append(toks, tk), append(sids, sid)
	}
	if v := l.verdict(t, oldest); v.Status != 200 {
		t.Fatalf("at the limit, the oldest session: %+v", v)
	}
	l.clock.Advance(time.Minute)
	evictedAt := l.clock.Now()
	newest, newestSID := l.login(t, "limit@example.com", pw, true)
	if v := l.verdict(t, oldest); v.Status != 401 || v.Reason != "TOKEN_REVOKED" || v.Detail != "session_limit" {
		t.Fatalf("beyond the limit, the oldest session: %+v, want TOKEN_REVOKED session_limit", v)
	}
	for _, tk := range append(toks, newest) {
		if v := l.verdict(t, tk); v.Status != 200 {
			t.Fatalf("a newer session: %+v", v)
		}
	}
	events := l.events(t, eventstore.UserSubject(uid))
	last, before := events[len(events)-1], events[len(events)-2]
	if last.Type != domain.EventSessionStarted || last.SessionID != newestSID || before.Type != domain.EventSessionEvicted || before.SessionID != oldestSID || !before.Time.Equal(last.Time) {
		t.Fatalf("the login's decision: %s %s then %s %s", before.Type, before.SessionID, last.Type, last.SessionID)
	}
	if ids, _, _ := listAll(t, l, newest, ""); !slices.Equal(ids, []string{newestSID, sids[1], sids[0]}) {
		t.Fatalf("live sessions after the eviction: %v", ids)
	}

	at := evictedAt.Add(time.Second).Format(time.RFC3339)
	r := l.admin(t, "/v1/audit/sessions/"+oldestSID+"?at="+at)
	expl, _ := r.get("explanation").([]any)
	if r.Status != 200 || r.str("reason") != "revoked:session_limit" || r.str("revoked_by") != "session_limit" || len(expl) == 0 ||
		!strings.Contains(r.str("summary"), "session_evicted") || !strings.Contains(r.str("summary"), "limit of 3 live sessions") {
		t.Fatalf("as-of audit: %d %s", r.Status, r.Raw)
	}
	if m := expl[len(expl)-1].(map[string]any); m["role"] != "revoked" || m["event"].(map[string]any)["type"] != string(domain.EventSessionEvicted) {
		t.Fatalf("the revoking event in the explanation: %v", m)
	}
	if r := l.admin(t, "/v1/audit/sessions/"+oldestSID+"?at="+evictedAt.Add(-time.Second).Format(time.RFC3339)); r.str("reason") != "" || r.get("valid") != true {
		t.Fatalf("as-of just before the eviction: %s", r.Raw)
	}

	// The evicted session is out of what writes load, yet terminating it
	// is still the no-op it is for any dead session of the caller's.
	seq := l.lastSeq(t)
	if r := l.do(t, "DELETE", "/v1/sessions/"+oldestSID, newest, nil); r.Status != 200 || r.get("response", "seq") != float64(seq) {
		t.Fatalf("terminate of the evicted session: %d %s, want 200 at seq %d", r.Status, r.Raw, seq)
	}
	if l.lastSeq(t) != seq {
		t.Fatal("terminating a dead session appended an event")
	}
	_, _, strangerSID := l.signup(t, "limit-stranger@example.com", pw, true)
	if r := l.do(t, "DELETE", "/v1/sessions/"+strangerSID, newest, nil); r.Status != 404 || r.str("reason") != "SESSION_NOT_FOUND" {
		t.Fatalf("terminate of another user's session: %d %s", r.Status, r.Raw)
	}
}

// TestOldProjectionLayoutIsRebuiltAtStart: a data dir whose projection was
// written under the previous key layout is rebuilt from the stream when the
// server starts, and answers as before.
func TestOldProjectionLayoutIsRebuiltAtStart(t *testing.T) {
	dir, clock := t.TempDir(), newClock()
	l := startLedger(t, dir, clock)
	const pw = "layout password"
	tok, _, _ := l.signup(t, "layout@example.com", pw, true)
	out, _ := l.login(t, "layout@example.com", pw, true)
	l.do(t, "POST", "/v1/auth/logout", out, nil)
	applied := l.proj.Applied()
	l.stop()

	db, err := pebble.Open(projectionDir(dir), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Delete([]byte("mlayout"), pebble.Sync); err != nil { // as a layout-1 projection has none
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	l = startLedger(t, dir, clock)
	if got := l.proj.Applied(); got != applied {
		t.Fatalf("after the rebuild at start, applied %d, want %d", got, applied)
	}
	if !strings.Contains(l.logs.String(), "older key layout; rebuilding") {
		t.Errorf("the start did not say it rebuilt the projection: %s", l.logs.String())
	}
	if v := l.verdict(t, tok); v.Status != 200 {
		t.Errorf("a live session after the rebuild: %+v", v)
	}
	if v := l.verdict(t, out); v.Status != 401 || v.Detail != "logout" {
		t.Errorf("a logged-out session after the rebuild: %+v", v)
	}
}

// TestInterruptedRebuildIsRebuiltAtStart: a data dir whose projection
// carries the mark of a rebuild that did not finish is rebuilt from the
// stream when the server starts, instead of being served as complete.
func TestInterruptedRebuildIsRebuiltAtStart(t *testing.T) {
	dir, clock := t.TempDir(), newClock()
	l := startLedger(t, dir, clock)
	const pw = "rebuild password"
	tok, _, _ := l.signup(t, "rebuild@example.com", pw, true)
	out, _ := l.login(t, "rebuild@example.com", pw, true)
	l.do(t, "POST", "/v1/auth/logout", out, nil)
	applied := l.proj.Applied()
	l.stop()

	// As a rebuild stopped half way leaves it: the mark, and part of the
	// stream (here: the last events' sessions are gone).
	db, err := pebble.Open(projectionDir(dir), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("mrebuilding"), []byte{1}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRange([]byte("s"), []byte("t"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	l = startLedger(t, dir, clock)
	if got := l.proj.Applied(); got != applied {
		t.Fatalf("after the rebuild at start, applied %d, want %d", got, applied)
	}
	if !strings.Contains(l.logs.String(), "interrupted rebuild; rebuilding") {
		t.Errorf("the start did not say it rebuilt the projection: %s", l.logs.String())
	}
	if v := l.verdict(t, tok); v.Status != 200 {
		t.Errorf("a live session after the rebuild: %+v", v)
	}
	if v := l.verdict(t, out); v.Status != 401 || v.Detail != "logout" {
		t.Errorf("a logged-out session after the rebuild: %+v", v)
	}
}
