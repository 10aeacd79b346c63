package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Fuzz targets; their seed corpora are in testdata/fuzz/<name>. .ci/run
// fuzzes each for a few seconds.

// checkEnvelope fails unless a response is the API's error envelope with
// its own status.
func checkEnvelope(t *testing.T, status int, contentType string, body []byte) map[string]any {
	t.Helper()
	var env map[string]any
	if contentType != "application/json" {
		t.Fatalf("a %d answer with Content-Type %q: %q", status, contentType, body)
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("a %d answer that is not a JSON object: %q", status, body)
	}
	if status >= 400 {
		reason, _ := env["reason"].(string)
		msg, _ := env["message"].(string)
		if env["statusCode"] != float64(status) || reason == "" || msg == "" {
			t.Fatalf("a %d answer that is not the error envelope: %s", status, body)
		}
	}
	return env
}

// checkAuthzAnswer fails unless an answer of gateway mode is one of its
// own: 200 with the identity, or 401/403 with X-Ledger-Reason (the fake
// ledger is never behind and never fails).
func checkAuthzAnswer(t *testing.T, res *http.Response) {
	t.Helper()
	h := res.Header
	switch res.StatusCode {
	case 200:
		if h.Get(HeaderUserID) == "" || h.Get(HeaderSessionID) == "" || h.Get(HeaderRole) == "" {
			t.Fatalf("an authz 200 without the identity: %v", h)
		}
	case 401, 403:
		if h.Get(HeaderReason) == "" || h.Get(HeaderUserID) != "" {
			t.Fatalf("an authz %d with headers %v", res.StatusCode, h)
		}
	default:
		t.Fatalf("an authz answer %d: %v", res.StatusCode, h)
	}
}

// FuzzReadCredentials fuzzes the body decoder of signup and login
// (readCredentials, which both handlers call, and decodeBody under it): it
// never panics; a refusal is a 4xx of the error table in the JSON envelope
// (400 INVALID_REQUEST, 413, 415), never a 5xx; what it accepts is JSON
// with both fields, and reads as encoding/json reads it.
func FuzzReadCredentials(f *testing.F) {
	a := New(Config{})
	want := map[int]string{400: "INVALID_REQUEST", 413: errBodyTooLarge.Reason, 415: errUnsupportedMedia.Reason}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		r := httptest.NewRequest("POST", "/v1/auth/login", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		c, ok := a.readCredentials(w, r, false)
		if !ok {
			env := checkEnvelope(t, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes())
			if want[w.Code] == "" || env["reason"] != want[w.Code] {
				t.Fatalf("refused with %d %v, want one of %v", w.Code, env["reason"], want)
			}
			return
		}
		if w.Body.Len() != 0 || !strings.HasPrefix(strings.ToLower(strings.TrimSpace(contentType)), "application/json") {
			t.Fatalf("accepted with Content-Type %q, and wrote %q", contentType, w.Body)
		}
		if !json.Valid(body) || !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not valid JSON: %q", body)
		}
		var v1 credentialsRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v1); err != nil || v1.Email == nil || v1.Password == nil {
			t.Fatalf("accepted %q, which encoding/json reads as %+v (%v)", body, v1, err)
		}
		keep := v1.KeepLoggedIn != nil && *v1.KeepLoggedIn
		if c.Email != *v1.Email || c.Password != *v1.Password || c.KeepLoggedIn != keep {
			t.Fatalf("%q reads as %+v here, but as %q %q %v with encoding/json", body, c, *v1.Email, *v1.Password, keep)
		}
	})
}

// fuzzToken is the token of the fixture's first signup (seededRand makes
// it the same in every process); the seed corpus of FuzzHTTP uses it.
const fuzzToken = "slt_6ae6783f4fbde91b6eb88b73a48ed2472-WILiV5aDQywb_FJUVK3QzYcnTWcITKrw4NNshJbbc"

// FuzzHTTP writes arbitrary bytes, as one or more requests, to a real TCP
// connection to the API served as the service serves it (NewServer,
// Listener, Handler) over a fake ledger, and reads every answer: each is
// JSON, never a redirect; an error is the envelope with its own status,
// and no 5xx but the 501 and 505 that net/http gives a transfer coding or
// protocol version it does not speak (the fake ledger never fails, so
// anything else would be the API's own fault).
func FuzzHTTP(f *testing.F) {
	now := func() time.Time { return time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC) }
	a, err := fakeAPI(now)
	if err != nil {
		f.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := NewServer(a.Handler(), nil)
	srv.ErrorLog = nil
	srv.ReadHeaderTimeout, srv.ReadTimeout = 2*time.Second, 2*time.Second
	go func() { _ = srv.Serve(Listener(ln)) }()
	f.Cleanup(func() { _ = srv.Close() })
	// The fixture's account; its token is fuzzToken.
	signup := httptest.NewRequest("POST", "/v1/auth/signup", strings.NewReader(`{"email":"ann@example.com","password":"correct horse"}`))
	signup.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	a.Handler().ServeHTTP(w, signup)
	var issued struct{ Response issuedResponse }
	if err := json.Unmarshal(w.Body.Bytes(), &issued); err != nil || w.Code != 201 || issued.Response.Token != fuzzToken {
		f.Fatalf("fixture signup: %d %s, want token %s", w.Code, w.Body, fuzzToken)
	}
	allowed5xx := map[int]string{501: errTransferEncoding.Reason, 505: errHTTPVersion.Reason}

	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 64<<10 {
			return
		}
		// The requests in raw, as the server parses them, so that a HEAD's
		// answer is read without a body, and gateway mode's answers are
		// judged by its own contract.
		var methods, paths []string
		for br := bufio.NewReader(bytes.NewReader(raw)); ; {
			req, err := http.ReadRequest(br)
			if err != nil {
				break
			}
			methods = append(methods, req.Method)
			paths = append(paths, req.URL.Path)
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				break
			}
		}
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			_, _ = conn.Write(raw)
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		br := bufio.NewReader(conn)
		for i := 0; ; {
			req := &http.Request{Method: "GET"}
			path := ""
			if i < len(methods) {
				req.Method, path = methods[i], paths[i]
			}
			res, err := http.ReadResponse(br, req)
			if err != nil {
				var ne net.Error
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) {
					return
				}
				t.Fatalf("answer %d is not HTTP: %v", i, err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				return // cut by a timeout or a reset: nothing to judge
			}
			if res.StatusCode < 200 {
				continue // 100 Continue
			}
			i++
			s, ct := res.StatusCode, res.Header.Get("Content-Type")
			switch {
			case s >= 300 && s < 400:
				t.Fatalf("a redirect: %d %v", s, res.Header)
			case s >= 500 && allowed5xx[s] == "":
				t.Fatalf("a %d answer: %s", s, body)
			case isGatewayPath(path) && len(body) == 0 && ct == "":
				// Gateway mode: status and headers only (gateway.go).
				checkAuthzAnswer(t, res)
			case req.Method == "HEAD": // read without its body
				if ct != "application/json" {
					t.Fatalf("a %d answer to HEAD with Content-Type %q", s, ct)
				}
			default:
				env := checkEnvelope(t, s, ct, body)
				if s >= 500 && env["reason"] != allowed5xx[s] {
					t.Fatalf("a %d answer: %s", s, body)
				}
			}
			if res.Close {
				return // the last answer on the connection
			}
		}
	})
}
