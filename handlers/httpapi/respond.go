package httpapi

import (
	"bytes"
	"mime"
	"strconv"

	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 1 << 20

// apiError is the one error shape of the API.
type apiError struct {
	StatusCode int    `json:"statusCode"`
	Reason     string `json:"reason"`
	Message    string `json:"message"`
	// Optional details, for token verdicts.
	Expired   string `json:"expired,omitempty"`
	RevokedBy string `json:"revoked_by,omitempty"`
	// MFATicket is MFA_REQUIRED's ticket (mfa.go), also in Args.
	MFATicket string `json:"mfa_ticket,omitempty"`
	// Args are the error's parameters, as in Bubble's error bodies (seed
	// 004): always present, {} when there are none.
	Args map[string]any `json:"args"`

	retryAfter int // seconds; sent as Retry-After
}

// MarshalJSON writes Args as {} when there are none: callers of Bubble's
// API read it unconditionally.
func (e apiError) MarshalJSON() ([]byte, error) {
	type plain apiError
	p := plain(e)
	if p.Args == nil {
		p.Args = map[string]any{}
	}
	return json.Marshal(p)
}

func (e *apiError) Error() string { return e.Reason + ": " + e.Message }

func newError(status int, reason, message string) *apiError {
	return &apiError{StatusCode: status, Reason: reason, Message: message}
}

var (
	errNotFound         = newError(http.StatusNotFound, "NOT_FOUND", "no such endpoint")
	errInvalidPath      = newError(http.StatusBadRequest, "INVALID_PATH", `the path must be canonical: no empty, "." or ".." segments`)
	errMethodNotAllowed = newError(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "method not allowed on this endpoint")
	errBodyTooLarge     = newError(http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE", "request body exceeds 1 MiB")
	errUnsupportedMedia = newError(http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE", "request body must be JSON, sent with Content-Type: application/json")
	errInternal         = newError(http.StatusInternalServerError, "INTERNAL_ERROR", "internal error; the request may be retried")
)

func invalidRequest(msg string) *apiError {
	return newError(http.StatusBadRequest, "INVALID_REQUEST", msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// The values of every JSON answer's own headers, shared by all answers:
// nothing reads a header value to change it in place (net/http copies the
// handler's headers when the status is written), and sharing them saves a
// slice per header per request, as does naming the keys in their canonical
// form instead of canonicalising them with Set.
var (
	headerJSON    = []string{"application/json"}
	headerNoStore = []string{"no-store"}
)

// setJSONHeaders is Set("Content-Type", "application/json") and
// Set("Cache-Control", "no-store").
func setJSONHeaders(h http.Header) {
	h["Content-Type"] = headerJSON
	h["Cache-Control"] = headerNoStore
}

// bodyBuffers hold the answers encoded by hand (validResponse.appendJSON).
var bodyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeJSONBytes is writeJSON for a body already encoded, as
// json.Encoder.Encode writes it (with its newline).
func writeJSONBytes(w http.ResponseWriter, status int, body []byte) {
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.StatusCode == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		// For gateways, which drop the body (gateway.go).
		if reason := tokenReason(e); reason != "" {
			w.Header().Set(HeaderReason, reason)
		}
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
		if e.StatusCode == http.StatusTooManyRequests {
			withArgs := *e
			withArgs.Args = map[string]any{"retry_after": e.retryAfter}
			e = &withArgs
		}
	}
	writeJSON(w, e.StatusCode, e)
}

// success wraps a body in Bubble's {"status":"success","response":{...}}.
func success(w http.ResponseWriter, status int, response any) {
	writeJSON(w, status, successBody{Response: response, Status: "success"})
}

// decodeBody reads one JSON object into dst from a body of at most
// MaxBodyBytes, strictly: Content-Type application/json (415 otherwise), a
// body over the limit 413 whatever it holds, and exact member names, no
// unknown or duplicate members, valid UTF-8 and nothing after the object
// (400 otherwise). Two different byte strings must never read as the same
// request, and a client's typo must not pass as a default. Error messages
// never echo the body: it may hold a password.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) *apiError {
	if mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" ||
		(params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8")) {
		return errUnsupportedMedia
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case err != nil:
		return invalidRequest("the request body could not be read")
	case len(bytes.TrimSpace(body)) == 0:
		return invalidRequest("request body is empty; expected a JSON object")
	}
	err = jsonv2.Unmarshal(body, dst, jsonv2.RejectUnknownMembers(true))
	if err == nil {
		return nil
	}
	var semantic *jsonv2.SemanticError
	field := ""
	if errors.As(err, &semantic) {
		field = strings.TrimPrefix(string(semantic.JSONPointer), "/")
	}
	switch {
	case errors.Is(err, jsonv2.ErrUnknownName):
		return invalidRequest("unknown field " + strconv.Quote(field) + " (field names are exact, e.g. \"email\")")
	case errors.Is(err, jsontext.ErrDuplicateName):
		return invalidRequest("a field appears twice in the JSON object")
	case strings.Contains(err.Error(), "invalid UTF-8"):
		return invalidRequest("request body is not valid UTF-8")
	case semantic != nil && field != "":
		return invalidRequest("field " + strconv.Quote(field) + " has the wrong type")
	case semantic != nil:
		return invalidRequest("request body must be a JSON object")
	default:
		return invalidRequest("request body is not valid JSON")
	}
}

// queryParam finds one query parameter without building the url.Values map
// that r.URL.Query() allocates on every call; validate runs it per request.
func queryParam(r *http.Request, name string) (value string, present bool) {
	for part := range strings.SplitSeq(r.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			// Only an escape (%XX, or + for a space) can make k read as name.
			if !hasEscape(k) {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if hasEscape(v) {
			if uv, err := url.QueryUnescape(v); err == nil {
				v = uv
			}
		}
		return v, true
	}
	return "", false
}

// hasEscape reports whether a query's key or value holds an escape: %XX,
// or + for a space.
func hasEscape(s string) bool {
	return strings.IndexByte(s, '%') >= 0 || strings.IndexByte(s, '+') >= 0
}
