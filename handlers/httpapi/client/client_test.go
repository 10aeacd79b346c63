package client

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// TestARevocationDuringAValidateKeepsItOutOfTheCache: the ledger answers
// "valid", but the feed revokes the session while that answer is on its
// way; the answer must not be cached, or the revoked token would pass
// here for a whole TTL.
func TestARevocationDuringAValidateKeepsItOutOfTheCache(t *testing.T) {
	token, sid, _, err := domain.NewToken(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-release
		}
		asked, _, _ := domain.ParseToken(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Validation{Valid: true, SessionID: asked, UserID: "u1", ExpiresAt: time.Now().Add(time.Hour)})
	}))
	defer srv.Close()
	c, err := New(srv.URL, WithCache(10, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Validate(context.Background(), token)
		done <- err
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	c.Forget(sid) // the feed's revocation arrives first
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v, err := c.Validate(context.Background(), token); err != nil || v.Cached || calls.Load() != 2 {
		t.Fatalf("after the revocation: %+v %v, %d calls; want a fresh answer from the ledger", v, err, calls.Load())
	}

	// Without a revocation, the same answer is cached.
	other, _, _, _ := domain.NewToken(rand.Reader)
	if _, err := c.Validate(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Validate(context.Background(), other); err != nil || !v.Cached {
		t.Fatalf("second validate of a live session: %+v %v, want it cached", v, err)
	}
}
