// Package client is a Go client of the ledger's HTTP API: signup, login,
// logout, logout-others, the session list and validate, with an optional
// cache of valid verdicts that the revocation feed keeps honest.
//
// The cache is what lets an API server validate on every request without
// a round trip each time, and the feed is what makes that safe: a cached
// "valid" is dropped the moment the ledger revokes the session (Follow), it
// never outlives its TTL or the session's own deadline, and the whole cache
// is dropped when the feed cannot vouch for it (a heartbeat that is not
// fresh, or a broken stream). Only valid verdicts are cached: an invalid
// token always asks the ledger.
//
// It lives under handlers/httpapi because it speaks exactly that adapter's
// contract; the project's own tests drive the server through it.
package client

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/sessionledger/ledger/domain"
)

// Client talks to one ledger base URL. It is safe for concurrent use.
type Client struct {
	base   string
	http   *http.Client
	apiKey string
	cache  *expirable.LRU[string, cached] // by session id; nil: no cache
	// revoked remembers sessions the feed revoked for as long as a cache
	// entry lives, and gen counts purges: a validate that was in flight
	// while either happened must not put its older answer in the cache.
	revoked *expirable.LRU[string, struct{}]
	gen     atomic.Uint64
	now     func() time.Time
}

// Option configures New.
type Option func(*Client)

// WithHTTPClient uses hc instead of a client with a 10 s timeout.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithAPIKey sends key as X-API-Key where the API asks for one: the
// revocation feed (Follow) needs a service key with scope feed.
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// WithCache keeps up to size valid verdicts for at most ttl each. Use it
// with Follow running, or a revoked token stays valid here for up to ttl.
func WithCache(size int, ttl time.Duration) Option {
	return func(c *Client) {
		c.cache = expirable.NewLRU[string, cached](size, nil, ttl)
		c.revoked = expirable.NewLRU[string, struct{}](size, nil, ttl)
	}
}

// WithClock replaces time.Now for the cache's deadline checks (tests).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// New is a client of the ledger at base (e.g. http://127.0.0.1:8080).
func New(base string, opts ...Option) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http(s)://host[:port]", base)
	}
	c := &Client{base: strings.TrimRight(base, "/"), http: &http.Client{Timeout: 10 * time.Second}, now: time.Now}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is the API's error envelope.
type Error struct {
	StatusCode int            `json:"statusCode"`
	Reason     string         `json:"reason"`
	Message    string         `json:"message"`
	Expired    string         `json:"expired,omitempty"`
	RevokedBy  string         `json:"revoked_by,omitempty"`
	Args       map[string]any `json:"args"`
	// RetryAfter is the Retry-After header, if any.
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("ledger: %d %s: %s", e.StatusCode, e.Reason, e.Message)
}

// Session is a token as signup and login hand it out.
type Session struct {
	Token     string `json:"token"`
	UserID    string `json:"user_id"`
	SessionID string `json:"session_id"`
	Expires   int64  `json:"expires"` // seconds to the max deadline
	Seq       uint64 `json:"seq"`
}

// Validation is validate's answer for a valid token.
type Validation struct {
	Valid         bool      `json:"valid"`
	UserID        string    `json:"user_id"`
	SessionID     string    `json:"session_id"`
	ExpiresAt     time.Time `json:"expires_at"`
	IdleExpiresAt time.Time `json:"idle_expires_at"`
	MaxExpiresAt  time.Time `json:"max_expires_at"`
	KeepLoggedIn  bool      `json:"keep_logged_in"`
	MFA           bool      `json:"mfa"`
	// Cached reports that the answer came from the cache.
	Cached bool `json:"-"`
}

// SessionInfo is one entry of the session list.
type SessionInfo struct {
	SessionID  string    `json:"session_id"`
	Status     string    `json:"status"`
	Reason     string    `json:"reason,omitempty"`
	Current    bool      `json:"current"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	LastUsedAt time.Time `json:"last_used_at"`
}

// SessionsPage is one page of the list; NextCursor is empty on the last.
type SessionsPage struct {
	Sessions   []SessionInfo `json:"sessions"`
	NextCursor string        `json:"next_cursor"`
}

// ListOptions select a page of the session list.
type ListOptions struct {
	All    bool // every session, not only the live ones
	Limit  int  // 0: the server's default
	Cursor string
}

type success[T any] struct {
	Status   string `json:"status"`
	Response T      `json:"response"`
}

// Signup registers an account and returns its first session.
func (c *Client) Signup(ctx context.Context, email, password string, keepLoggedIn bool) (Session, error) {
	var out success[Session]
	err := c.do(ctx, "POST", "/v1/auth/signup", "", credentials{email, password, keepLoggedIn}, &out)
	return out.Response, err
}

// Login starts a session.
func (c *Client) Login(ctx context.Context, email, password string, keepLoggedIn bool) (Session, error) {
	var out success[Session]
	err := c.do(ctx, "POST", "/v1/auth/login", "", credentials{email, password, keepLoggedIn}, &out)
	return out.Response, err
}

type credentials struct {
	Email        string `json:"email"`
	Password     string `json:"password"`
	KeepLoggedIn bool   `json:"keep_logged_in"`
}

// Logout revokes token's session (and forgets it here at once).
func (c *Client) Logout(ctx context.Context, token string) error {
	c.forgetToken(token)
	return c.do(ctx, "POST", "/v1/auth/logout", token, nil, nil)
}

// LogoutOthers revokes every other live session of token's user and
// returns how many.
func (c *Client) LogoutOthers(ctx context.Context, token string) (int, error) {
	var out success[struct {
		Revoked int `json:"revoked"`
	}]
	err := c.do(ctx, "POST", "/v1/auth/logout-others", token, nil, &out)
	return out.Response.Revoked, err
}

// Sessions lists a page of token's user's sessions, newest first.
func (c *Client) Sessions(ctx context.Context, token string, o ListOptions) (SessionsPage, error) {
	q := url.Values{}
	if o.All {
		q.Set("status", "all")
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	path := "/v1/sessions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out SessionsPage
	err := c.do(ctx, "GET", path, token, nil, &out)
	return out, err
}

// Validate asks whether token is valid now. A valid verdict may come from
// the cache (Cached); an invalid one is an *Error (401 with the reason).
func (c *Client) Validate(ctx context.Context, token string) (Validation, error) {
	sid, hash, err := domain.ParseToken(token)
	if err != nil {
		// Malformed: the ledger says TOKEN_INVALID; no need to ask.
		return Validation{}, &Error{StatusCode: http.StatusUnauthorized, Reason: "TOKEN_INVALID", Message: "token is not valid"}
	}
	if v, ok := c.cached(sid, hash); ok {
		return v, nil
	}
	gen := c.gen.Load()
	var v Validation
	if err := c.do(ctx, "GET", "/v1/validate", token, nil, &v); err != nil {
		return Validation{}, err
	}
	if c.cache != nil && v.Valid && v.SessionID == sid && !c.revoked.Contains(sid) && c.gen.Load() == gen {
		c.cache.Add(sid, cached{hash: hash, v: v})
	}
	return v, nil
}

type cached struct {
	hash domain.TokenHash
	v    Validation
}

func (c *Client) cached(sid string, hash domain.TokenHash) (Validation, bool) {
	if c.cache == nil {
		return Validation{}, false
	}
	e, ok := c.cache.Get(sid)
	if !ok || subtle.ConstantTimeCompare(e.hash[:], hash[:]) != 1 {
		return Validation{}, false
	}
	if !c.now().Before(e.v.ExpiresAt) { // the session's own deadline passed
		c.cache.Remove(sid)
		return Validation{}, false
	}
	v := e.v
	v.Cached = true
	return v, true
}

func (c *Client) forgetToken(token string) {
	if sid, _, err := domain.ParseToken(token); err == nil {
		c.Forget(sid)
	}
}

// Forget drops a revoked session from the cache, and keeps it out.
func (c *Client) Forget(sessionID string) {
	if c.cache != nil {
		c.revoked.Add(sessionID, struct{}{})
		c.cache.Remove(sessionID)
	}
}

// purge empties the cache, and keeps answers already in flight out of it.
func (c *Client) purge() {
	if c.cache != nil {
		c.gen.Add(1)
		c.cache.Purge()
	}
}

// do sends a request and decodes a 2xx JSON answer into out (if not nil),
// or returns the error envelope as *Error.
func (c *Client) do(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 {
		e := &Error{StatusCode: res.StatusCode}
		if json.Unmarshal(raw, e) != nil || e.Reason == "" {
			e.Reason, e.Message = "UNEXPECTED_ANSWER", strings.TrimSpace(string(raw))
		}
		if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("ledger: %s %s: %d answer: %w", method, path, res.StatusCode, err)
	}
	return nil
}

// ErrNoAPIKey means Follow was called without WithAPIKey.
var ErrNoAPIKey = errors.New("client: the revocation feed needs an API key (WithAPIKey)")
