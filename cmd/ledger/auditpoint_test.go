package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// lyingIndex names one user for every session, as a tampered projection
// might.
type lyingIndex struct{ userID string }

func (l lyingIndex) UserOfSession(context.Context, string) (string, error) { return l.userID, nil }

// TestAuditPointQueryFromTheProjection: on a stopped data dir, `audit
// verdict --session` and `audit history --session` find the session's user
// through the projection (read-only) and read only that user's subject;
// the answer is the one reading the whole stream gives. An index that lies
// or does not know the session makes them read the stream, and say so.
func TestAuditPointQueryFromTheProjection(t *testing.T) {
	dir := t.TempDir()
	l := startLedger(t, dir, newClock())
	_, uidA, sidA := l.signup(t, "point-a@example.com", "point a password", true)
	_, uidB, _ := l.signup(t, "point-b@example.com", "point b password", true)
	at := l.clock.Now().Add(time.Second)
	cfg := l.cfg.LogConfig
	l.stop()

	ctx := context.Background()
	ll := openAuditLog(t, cfg)
	index, why := openSessionIndex(dir)
	if index == nil {
		t.Fatalf("projection does not open read-only: %s", why)
	}
	defer index.Close()

	answer := func(src auditSource) (verdict map[string]any, history, warned string) {
		t.Helper()
		var warn, out bytes.Buffer
		src.warn = &warn
		if err := auditVerdict(ctx, src, sidA, at, true, &out); err != nil {
			t.Fatalf("verdict: %v (%s)", err, warn.String())
		}
		_ = json.Unmarshal(out.Bytes(), &verdict)
		out.Reset()
		if err := auditHistory(ctx, src, nil, "", sidA, "", time.Time{}, time.Time{}, true, &out); err != nil {
			t.Fatalf("history: %v (%s)", err, warn.String())
		}
		return verdict, out.String(), warn.String()
	}
	scanned, scannedHistory, note := answer(auditSource{store: ll.store})
	if !strings.Contains(note, "reading the whole stream") {
		t.Errorf("no index, no note: %q", note)
	}
	if scanned["user_id"] != uidA || scanned["valid"] != true {
		t.Fatalf("scanned verdict: %v", scanned)
	}

	got, history, note := answer(auditSource{store: ll.store, index: index})
	if note != "" {
		t.Errorf("the projection knows the session, yet: %q", note)
	}
	if g, _ := json.Marshal(got); string(g) != mustJSON(scanned) {
		t.Errorf("verdict through the projection %s, by the scan %s", g, mustJSON(scanned))
	}
	if history != scannedHistory || strings.Count(history, "\n") < 2 {
		t.Errorf("history through the projection:\n%s\nby the scan:\n%s", history, scannedHistory)
	}

	// A lying index: the log of the user it names does not start the
	// session, so the stream is read and the answer is still the log's.
	got, history, note = answer(auditSource{store: ll.store, index: lyingIndex{uidB}})
	if !strings.Contains(note, "holds no authentic start") {
		t.Errorf("lying index, note %q", note)
	}
	if got["user_id"] != uidA || history != scannedHistory {
		t.Errorf("lying index changed the answer: %v\n%s", got, history)
	}
	_, _, note = answer(auditSource{store: ll.store, index: lyingIndex{"u.>"}})
	if !strings.Contains(note, "malformed") {
		t.Errorf("wildcard user id, note %q", note)
	}

	// A session the index does not know: read the stream, then not found.
	var warn, out bytes.Buffer
	if err := auditVerdict(ctx, auditSource{store: ll.store, index: index, warn: &warn}, strings.Repeat("c", 32), at, false, &out); err == nil {
		t.Error("verdict for an unknown session succeeded")
	}
	if !strings.Contains(warn.String(), "does not know the session") {
		t.Errorf("unknown session, note %q", warn.String())
	}
	if p, why := openSessionIndex(t.TempDir()); p != nil || why == "" {
		t.Errorf("a data dir without projection: %v %q", p, why)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
