package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawExchange writes raw to a fresh TCP connection to the instance, closes
// its write side, and reads every response until the server closes: what
// net/http writes itself, which no http.Client request can provoke.
func rawExchange(t *testing.T, l *testLedger, raw string, methods ...string) []response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(l.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		// The server may answer and close before it has read everything
		// (431): a failed write is no failure of the test.
		_, _ = io.WriteString(conn, raw)
		_ = conn.(*net.TCPConn).CloseWrite()
	}()
	br := bufio.NewReader(conn)
	var out []response
	for i := 0; ; i++ {
		req := &http.Request{Method: "GET"}
		if i < len(methods) {
			req.Method = methods[i]
		}
		res, err := http.ReadResponse(br, req)
		if err != nil {
			if len(out) == 0 {
				t.Fatalf("no response to %.60q: %v", raw, err)
			}
			return out
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("reading the %d answer to %.60q: %v", res.StatusCode, raw, err)
		}
		r := response{Status: res.StatusCode, Header: res.Header, Raw: string(body)}
		if err := json.Unmarshal(body, &r.Body); err != nil {
			t.Fatalf("the %d answer to %.60q is not a JSON object (%s): %q", res.StatusCode, raw, res.Header.Get("Content-Type"), body)
		}
		out = append(out, r)
	}
}

// TestHTTPLayerErrorsAreJSON: what net/http and its ServeMux would answer
// themselves (a redirect for a path to clean, text/plain for a request it
// cannot parse or whose headers are too large) comes in the API's JSON
// error envelope, over a real TCP connection to a real instance, and a good
// request on the same connection before it is unaffected.
func TestHTTPLayerErrorsAreJSON(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	big := strings.Repeat("x", 100<<10)
	cases := []struct {
		name, raw string
		status    int
		reason    string
		mentions  string
	}{
		{"double slash", "GET //v1/validate HTTP/1.1\r\nHost: ledger\r\n\r\n", 400, "INVALID_PATH", "canonical"},
		{"dot dot", "GET /v1/../v1/validate HTTP/1.1\r\nHost: ledger\r\n\r\n", 400, "INVALID_PATH", "canonical"},
		{"dot", "GET /v1/./validate?touch=false HTTP/1.1\r\nHost: ledger\r\n\r\n", 400, "INVALID_PATH", "canonical"},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: ledger\r\n\r\n", 400, "INVALID_PATH", "canonical"},
		{"CONNECT", "CONNECT ledger:443 HTTP/1.1\r\nHost: ledger:443\r\n\r\n", 400, "INVALID_PATH", "canonical"},
		{"malformed request line", "GARBAGE\r\n\r\n", 400, "INVALID_REQUEST", "malformed HTTP request"},
		{"malformed header", "GET /healthz HTTP/1.1\r\nHost: ledger\r\nno colon here\r\n\r\n", 400, "INVALID_REQUEST", "malformed HTTP request"},
		{"no Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, "INVALID_REQUEST", "Host"},
		{"invalid header value", "GET /healthz HTTP/1.1\r\nHost: ledger\r\nX-A: a\x01b\r\n\r\n", 400, "INVALID_REQUEST", "malformed HTTP request"},
		{"100 KiB header", "GET /v1/validate HTTP/1.1\r\nHost: ledger\r\nX-Big: " + big + "\r\n\r\n", 431, "HEADERS_TOO_LARGE", "16 KiB"},
		{"HTTP/2.0 request line", "GET /healthz HTTP/2.0\r\nHost: ledger\r\n\r\n", 505, "HTTP_VERSION_NOT_SUPPORTED", "HTTP/1"},
		{"unknown transfer coding", "POST /v1/auth/login HTTP/1.1\r\nHost: ledger\r\nTransfer-Encoding: gzip\r\nContent-Type: application/json\r\n\r\n", 501, "UNSUPPORTED_TRANSFER_ENCODING", "Transfer-Encoding"},
		{"unknown expectation", "GET /healthz HTTP/1.1\r\nHost: ledger\r\nExpect: tea\r\n\r\n", 417, "EXPECTATION_FAILED", "100-continue"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, after := range []bool{false, true} {
				raw, methods := c.raw, []string{"GET"}
				if after { // the same after a good request on the connection
					raw, methods = "GET /healthz HTTP/1.1\r\nHost: ledger\r\n\r\n"+raw, []string{"GET", "GET"}
				}
				rs := rawExchange(t, l, raw, methods...)
				if after {
					if rs[0].Status != 200 || rs[0].str("status") != "ok" || len(rs) != 2 {
						t.Fatalf("after /healthz: %d answers, the first %d %s", len(rs), rs[0].Status, rs[0].Raw)
					}
					rs = rs[1:]
				}
				r := rs[0]
				if r.Status != c.status || r.Header.Get("Content-Type") != "application/json" || r.str("reason") != c.reason ||
					r.get("statusCode") != float64(c.status) || !strings.Contains(r.str("message"), c.mentions) {
					t.Fatalf("%d %s %s, want %d %s mentioning %q in the JSON envelope", r.Status, r.Header.Get("Content-Type"), r.Raw, c.status, c.reason, c.mentions)
				}
				if r.Header.Get("Location") != "" {
					t.Fatalf("a redirect: %v", r.Header)
				}
			}
		})
	}
}
