package main

import (
	"context"
	"errors"
	"testing"
	"time"

	ledgerclient "github.com/sessionledger/ledger/handlers/httpapi/client"
)

// TestClientCacheFollowsTheFeed drives a server through the Go client: a
// valid verdict is cached, the revocation feed drops it the moment another
// client logs the session out (the next validate asks the ledger and hears
// "revoked"), and the session list and logout-others work through it.
func TestClientCacheFollowsTheFeed(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock(), func(c *ServiceConfig) { c.FeedHeartbeat = 300 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cached, err := ledgerclient.New(l.URL(), ledgerclient.WithAPIKey(testAdminKey), ledgerclient.WithCache(100, time.Hour), ledgerclient.WithClock(l.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := ledgerclient.New(l.URL())
	if err != nil {
		t.Fatal(err)
	}
	first, err := plain.Signup(ctx, "client@example.com", "client password", true)
	if err != nil {
		t.Fatal(err)
	}
	l.clock.Advance(time.Second) // the list is newest first: make "second" the newest
	second, err := plain.Login(ctx, "client@example.com", "client password", false)
	if err != nil || second.Expires != 86400 {
		t.Fatalf("login: %+v %v", second, err)
	}

	revoked := make(chan ledgerclient.Revocation, 8)
	followed := make(chan error, 1)
	go func() {
		followed <- cached.Follow(ctx, ledgerclient.FollowOptions{AfterSeq: l.lastSeq(t), OnRevocation: func(r ledgerclient.Revocation) { revoked <- r }})
	}()

	if v, err := cached.Validate(ctx, second.Token); err != nil || !v.Valid || v.Cached || v.UserID != second.UserID {
		t.Fatalf("first validate: %+v %v", v, err)
	}
	if v, err := cached.Validate(ctx, second.Token); err != nil || !v.Cached {
		t.Fatalf("second validate: %+v %v, want the cached verdict", v, err)
	}
	page, err := plain.Sessions(ctx, first.Token, ledgerclient.ListOptions{})
	if err != nil || len(page.Sessions) != 2 || page.Sessions[0].SessionID != second.SessionID {
		t.Fatalf("sessions: %+v %v", page, err)
	}

	// Another client revokes the cached session: the feed tells the cache.
	if n, err := plain.LogoutOthers(ctx, first.Token); err != nil || n != 1 {
		t.Fatalf("logout-others: %d %v", n, err)
	}
	select {
	case r := <-revoked:
		if r.SessionID != second.SessionID || r.Reason != "revoked:revoke_others" {
			t.Fatalf("revocation %+v", r)
		}
	case err := <-followed:
		t.Fatalf("follow stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the feed did not deliver the revocation in 20s")
	}
	_, err = cached.Validate(ctx, second.Token)
	var e *ledgerclient.Error
	if !errors.As(err, &e) || e.StatusCode != 401 || e.Reason != "TOKEN_REVOKED" || e.RevokedBy != "revoke_others" {
		t.Fatalf("validate after the revocation: %v, want 401 TOKEN_REVOKED from the ledger", err)
	}
	all, err := plain.Sessions(ctx, first.Token, ledgerclient.ListOptions{All: true, Limit: 1})
	if err != nil || len(all.Sessions) != 1 || all.NextCursor == "" {
		t.Fatalf("first page of all sessions: %+v %v", all, err)
	}
	if err := plain.Logout(ctx, first.Token); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-followed; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow returned %v, want context.Canceled", err)
	}
}
