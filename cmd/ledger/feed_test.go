package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/ledger/handlers/httpapi"
)

// sseEvent is one server-sent event as a client sees it.
type sseEvent struct {
	Event, ID string
	Data      map[string]any
}

// feedStream is an open revocation feed: a reader goroutine parses events
// into a channel; the test goroutine takes them with next.
type feedStream struct {
	events chan sseEvent
	errs   chan error
	cancel context.CancelFunc
}

func openFeed(t *testing.T, l *testLedger, query string, header map[string]string) (*feedStream, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", l.URL()+httpapi.FeedPath+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", testAdminKey)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	f := &feedStream{events: make(chan sseEvent, 64), errs: make(chan error, 1), cancel: cancel}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != 200 {
		return f, resp
	}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				f.events <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.Data); err != nil {
					f.errs <- fmt.Errorf("data %q: %w", line, err)
					return
				}
			}
		}
		f.errs <- sc.Err()
	}()
	return f, resp
}

// next is the next event other than a heartbeat (heartbeats are returned
// only when wantHeartbeat).
func (f *feedStream) next(t *testing.T, wantHeartbeat bool) sseEvent {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev := <-f.events:
			if ev.Event == "heartbeat" && !wantHeartbeat {
				continue
			}
			return ev
		case err := <-f.errs:
			t.Fatalf("feed ended: %v", err)
		case <-timeout:
			t.Fatal("no event from the feed in 20s")
		}
	}
}

// TestRevocationFeed: every revoked session is one event, in log order,
// a logout-others expanded into its sessions, with an id only where the
// stream can be resumed without a gap or a repeat; heartbeats say how far
// the instance has applied and whether it is fresh; Last-Event-ID and
// after_seq resume; the feed needs the key.
func TestRevocationFeed(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock(), func(c *ServiceConfig) { c.FeedHeartbeat = 300 * time.Millisecond })
	const pw = "feed password"
	keep, uid, keptSID := l.signup(t, "feed@example.com", pw, true)
	_, s2 := l.login(t, "feed@example.com", pw, true)
	_, s3 := l.login(t, "feed@example.com", pw, true)
	start := l.lastSeq(t)

	feed, resp := openFeed(t, l, "?after_seq="+strconv.FormatUint(start, 10), nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("feed: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	hb := feed.next(t, true)
	if hb.Event != "heartbeat" || hb.Data["applied_seq"] != float64(start) || hb.Data["fresh"] != true || hb.ID != strconv.FormatUint(start, 10) {
		t.Fatalf("first event %+v, want a heartbeat at %d", hb, start)
	}

	others := l.do(t, "POST", "/v1/auth/logout-others", keep, nil)
	othersSeq := seqOf(t, others)
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		ev := feed.next(t, false)
		if ev.Event != "revocation" || ev.Data["seq"] != float64(othersSeq) || ev.Data["user_id"] != uid || ev.Data["reason"] != "revoked:revoke_others" {
			t.Fatalf("revocation %d: %+v", i, ev)
		}
		// Only the event's last session carries the id to resume from.
		if wantID := map[bool]string{true: strconv.FormatUint(othersSeq, 10), false: ""}[i == 1]; ev.ID != wantID {
			t.Fatalf("revocation %d has id %q, want %q", i, ev.ID, wantID)
		}
		got[ev.Data["session_id"].(string)] = true
	}
	if !got[s2] || !got[s3] || got[keptSID] {
		t.Fatalf("logout-others revoked %v, want %s and %s", got, s2, s3)
	}
	logout := l.do(t, "POST", "/v1/auth/logout", keep, nil)
	if ev := feed.next(t, false); ev.Data["session_id"] != keptSID || ev.Data["reason"] != "revoked:logout" || ev.ID != strconv.FormatUint(seqOf(t, logout), 10) {
		t.Fatalf("logout: %+v", ev)
	}

	// Resuming from the logout-others' id gives the logout and nothing else.
	resumed, _ := openFeed(t, l, "?after_seq=0", map[string]string{"Last-Event-ID": strconv.FormatUint(othersSeq, 10)})
	if ev := resumed.next(t, false); ev.Data["session_id"] != keptSID {
		t.Fatalf("resumed after %d: %+v, want the logout only", othersSeq, ev)
	}
	if ev := resumed.next(t, true); ev.Event != "heartbeat" {
		t.Fatalf("after the logout the resumed feed sent %+v, want a heartbeat", ev)
	}
	// From the start: all three, in log order.
	all, _ := openFeed(t, l, "", nil)
	var order []string
	for range 3 {
		order = append(order, all.next(t, false).Data["reason"].(string))
	}
	if strings.Join(order, ",") != "revoked:revoke_others,revoked:revoke_others,revoked:logout" {
		t.Fatalf("from the start: %v", order)
	}

	if r := doURL(t, l.URL(), "GET", httpapi.FeedPath, "", nil, nil); r.Status != 401 {
		t.Fatalf("without a key: %d %s", r.Status, r.Raw)
	}
	if r := doURL(t, l.URL(), "GET", httpapi.FeedPath+"?after_seq=x", "", map[string]string{"X-API-Key": testAdminKey}, nil); r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
		t.Fatalf("bad after_seq: %d %s", r.Status, r.Raw)
	}
}
