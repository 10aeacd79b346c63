package httpapi

import (
	"bytes"
	"encoding/json"
	"log"
	"net"
	"net/http"
	"path"
	"strconv"
	"time"
)

// MaxHeaderBytes bounds a request's line and headers; net/http answers a
// longer one with 431 HEADERS_TOO_LARGE (through Listener).
const MaxHeaderBytes = 16 << 10

// NewServer is the http.Server the API runs in: bounded in time and in
// header size, and with "OPTIONS *" passed to h (net/http would otherwise
// answer it itself, without a JSON body). Serve it on a Listener.
func NewServer(h http.Handler, errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:                      h,
		ReadHeaderTimeout:            5 * time.Second,
		ReadTimeout:                  15 * time.Second,
		WriteTimeout:                 30 * time.Second,
		IdleTimeout:                  2 * time.Minute,
		MaxHeaderBytes:               MaxHeaderBytes,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     errorLog,
	}
}

// canonicalPaths answers 400 INVALID_PATH for a path with empty, "." or ".."
// segments (//v1/validate, /v1/../v1/validate) or one that is not a path at
// all ("*", CONNECT's host:port). http.ServeMux would redirect those with a
// text/html 307; a gateway asking about a token must get an answer in the
// contract, not a redirect it may follow somewhere else.
func canonicalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isCanonicalPath(r.URL.EscapedPath()) {
			writeError(w, errInvalidPath)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isCanonicalPath is http.ServeMux's rule (its cleanPath) for a path it
// routes without redirecting.
func isCanonicalPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if p[len(p)-1] == '/' && c != "/" {
		c += "/"
	}
	return c == p
}

// Listener makes the errors that net/http writes itself, before any handler
// runs, speak the API's JSON error envelope. net/http answers a request it
// cannot parse by writing a canned text/plain response straight to the
// connection (server.go: "431 Request Header Fields Too Large",
// "400 Bad Request", "400 Bad Request: missing required Host header",
// "501 Not Implemented" for an unknown transfer coding, "505 HTTP Version
// Not Supported") and closing it, and answers an Expect other than
// 100-continue with an empty 417; there is no hook to change any of them.
// The connections of the returned listener recognise exactly those writes
// (each is one Write of one whole response, at a response boundary, and no
// response of the API looks like one: its bodies are JSON and its
// Content-Type is never text/plain for an error) and replace each with the
// same status carrying {"statusCode","reason","message"}. Every other byte
// passes through unchanged. Wrap the plain TCP listener, under TLS if any.
func Listener(ln net.Listener) net.Listener { return jsonErrorListener{ln} }

type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{Conn: c}, nil
}

type jsonErrorConn struct{ net.Conn }

// CloseWrite keeps net/http's half-close after a 431 (closeWriteAndWait),
// which lets the client read the answer before the connection goes.
func (c *jsonErrorConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	e := cannedError(p)
	if e == nil {
		return c.Conn.Write(p)
	}
	if _, err := c.Conn.Write(rawErrorResponse(string(p[:len(cannedProto)]), e)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// The pieces of net/http's canned responses (net/http/server.go).
const (
	cannedHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	cannedProto   = "HTTP/1.1 "
	expectFailed  = "417 Expectation Failed\r\n" // after "HTTP/1.x "
)

// The errors of net/http's canned responses, besides 400 INVALID_REQUEST.
var (
	errExpectationFailed = newError(http.StatusExpectationFailed, "EXPECTATION_FAILED", "the only Expect this server meets is 100-continue")
	errHeadersTooLarge   = newError(http.StatusRequestHeaderFieldsTooLarge, "HEADERS_TOO_LARGE", "the request line and headers exceed "+strconv.Itoa(MaxHeaderBytes>>10)+" KiB")
	errTransferEncoding  = newError(http.StatusNotImplemented, "UNSUPPORTED_TRANSFER_ENCODING", "the request's Transfer-Encoding is not supported; send chunked or a Content-Length")
	errHTTPVersion       = newError(http.StatusHTTPVersionNotSupported, "HTTP_VERSION_NOT_SUPPORTED", "only HTTP/1.x is served")
)

// cannedError is the API error for p if p is exactly one of net/http's own
// error responses, else nil.
func cannedError(p []byte) *apiError {
	if (bytes.HasPrefix(p, []byte("HTTP/1.1 "+expectFailed)) || bytes.HasPrefix(p, []byte("HTTP/1.0 "+expectFailed))) &&
		bytes.HasSuffix(p, []byte("\r\n\r\n")) && bytes.Contains(p, []byte("\r\nContent-Length: 0\r\n")) {
		// A response of net/http's own (sendExpectationFailed), in the
		// request's protocol version; the API never answers 417.
		return errExpectationFailed
	}
	if !bytes.HasPrefix(p, []byte(cannedProto)) || len(p) < len(cannedProto)+3 {
		return nil
	}
	switch string(p[len(cannedProto) : len(cannedProto)+3]) {
	case "400", "431", "501", "505":
	default:
		// No canned response of another status is replaced: spare every
		// other response (each 200 starts with "HTTP/1.1 ") the search for
		// the canned headers through the whole of it.
		return nil
	}
	head, body, ok := bytes.Cut(p[len(cannedProto):], []byte(cannedHeaders))
	if !ok {
		return nil
	}
	code, err := strconv.Atoi(string(head[:3]))
	if err != nil {
		return nil
	}
	status := strconv.Itoa(code) + " " + http.StatusText(code)
	switch {
	case code == http.StatusRequestHeaderFieldsTooLarge && string(head) == status && string(body) == status:
		return errHeadersTooLarge
	case code == http.StatusNotImplemented && string(head) == status && string(body) == "Unsupported transfer encoding":
		return errTransferEncoding
	case code == http.StatusBadRequest && string(head) == status && string(body) == status:
		return newError(code, "INVALID_REQUEST", "malformed HTTP request")
	case !bytes.Equal(head, body) || !bytes.HasPrefix(head, []byte(status+": ")):
		return nil
	}
	// "%d %s: %s" twice: a statusError, whose text net/http keeps to fixed
	// strings without anything from the request.
	text := string(head[len(status)+2:])
	switch code {
	case http.StatusBadRequest:
		return newError(code, "INVALID_REQUEST", "malformed HTTP request: "+text)
	case http.StatusHTTPVersionNotSupported:
		return errHTTPVersion
	}
	return nil
}

// rawErrorResponse is e as a whole response ("HTTP/1.x " is proto) that
// closes the connection, as net/http's own did.
func rawErrorResponse(proto string, e *apiError) []byte {
	body, _ := json.Marshal(e)
	body = append(body, '\n')
	var b bytes.Buffer
	b.WriteString(proto + strconv.Itoa(e.StatusCode) + " " + http.StatusText(e.StatusCode) + "\r\n")
	b.WriteString("Content-Type: application/json\r\nCache-Control: no-store\r\nConnection: close\r\n")
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	b.Write(body)
	return b.Bytes()
}
