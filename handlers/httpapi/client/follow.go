package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Revocation is one session the ledger revoked, as the feed sends it.
type Revocation struct {
	Seq       uint64    `json:"seq"`
	SessionID string    `json:"session_id"`
	UserID    string    `json:"user_id"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
}

type heartbeat struct {
	AppliedSeq uint64 `json:"applied_seq"`
	Fresh      bool   `json:"fresh"`
	Lag        string `json:"lag"`
}

// FollowOptions tune Follow.
type FollowOptions struct {
	// AfterSeq is where to start; 0 is the beginning of the ledger. A
	// cache only needs what is revoked from now on: pass the ledger's
	// current sequence, or leave 0 and pay one replay.
	AfterSeq uint64
	// OnRevocation, if set, sees every revocation after the cache has
	// dropped its session.
	OnRevocation func(Revocation)
	// Retry is the pause before reconnecting after the stream breaks
	// (default 1 s).
	Retry time.Duration
	// Silence is how long the stream may stay quiet (no event, no
	// heartbeat) before the cache is distrusted and the stream reopened
	// (default 45 s: three missed heartbeats).
	Silence time.Duration
}

// Follow reads the revocation feed until ctx ends, dropping each revoked
// session from the cache, and reconnects from the last complete point
// (Last-Event-ID) when the stream breaks. Whenever it cannot vouch for the
// cache (the stream is down, silent, or the ledger says it is not fresh)
// it empties the cache, so a cached verdict is never older than what the
// feed has confirmed. It returns ctx's error, or an error that retrying
// cannot fix (no key, a key refused).
func (c *Client) Follow(ctx context.Context, o FollowOptions) error {
	if c.apiKey == "" {
		return ErrNoAPIKey
	}
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	if o.Silence <= 0 {
		o.Silence = 45 * time.Second
	}
	after := o.AfterSeq
	for {
		err := c.follow(ctx, &after, o)
		c.purge()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var e *Error
		if errors.As(err, &e) && (e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden || e.StatusCode == http.StatusNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Retry):
		}
	}
}

// follow reads one stream; *after moves to every resumable id seen.
func (c *Client) follow(ctx context.Context, after *uint64, o FollowOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/feed/revocations", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", c.apiKey)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatUint(*after, 10))
	hc := *c.http
	hc.Timeout = 0 // a stream; silence is watched below instead
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		e := &Error{StatusCode: res.StatusCode}
		_ = json.NewDecoder(res.Body).Decode(e)
		return e
	}
	// A watchdog ends a silent stream: the reader below is blocked in
	// Read, and only closing the request gets it out.
	alive := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(o.Silence)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-alive:
				t.Reset(o.Silence)
			case <-t.C:
				cancel()
				return
			}
		}
	}()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var event, id, data string
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "id":
				id = value
			case "data":
				data = value
			}
			continue
		}
		select {
		case alive <- struct{}{}:
		default:
		}
		if err := c.dispatch(event, data, o); err != nil {
			return err
		}
		if id != "" {
			if seq, err := strconv.ParseUint(id, 10, 64); err == nil {
				*after = seq
			}
		}
		event, id, data = "", "", ""
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("client: the revocation feed ended")
}

func (c *Client) dispatch(event, data string, o FollowOptions) error {
	switch event {
	case "revocation":
		var r Revocation
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return fmt.Errorf("client: revocation %q: %w", data, err)
		}
		c.Forget(r.SessionID)
		if o.OnRevocation != nil {
			o.OnRevocation(r)
		}
	case "heartbeat":
		var h heartbeat
		if err := json.Unmarshal([]byte(data), &h); err != nil {
			return fmt.Errorf("client: heartbeat %q: %w", data, err)
		}
		if !h.Fresh {
			// The ledger itself may be missing revocations: so is the cache.
			c.purge()
		}
	}
	return nil
}
