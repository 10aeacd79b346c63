package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
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
}

func (e *apiError) Error() string { return e.Reason + ": " + e.Message }

func newError(status int, reason, message string) *apiError {
	return &apiError{StatusCode: status, Reason: reason, Message: message}
}

var (
	errNotFound         = newError(http.StatusNotFound, "NOT_FOUND", "no such endpoint")
	errMethodNotAllowed = newError(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "method not allowed on this endpoint")
	errBodyTooLarge     = newError(http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE", "request body exceeds 1 MiB")
	errInternal         = newError(http.StatusInternalServerError, "INTERNAL_ERROR", "internal error; the request may be retried")
)

func invalidRequest(msg string) *apiError {
	return newError(http.StatusBadRequest, "INVALID_REQUEST", msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.StatusCode == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	writeJSON(w, e.StatusCode, e)
}

// success wraps a body in Bubble's {"status":"success","response":{...}}.
func success(w http.ResponseWriter, status int, response any) {
	writeJSON(w, status, successBody{Response: response, Status: "success"})
}

// decodeBody reads one JSON object into dst from a body of at most
// MaxBodyBytes; anything else is a 400 or a 413.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) *apiError {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	err := dec.Decode(dst)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case errors.Is(err, io.EOF):
		return invalidRequest("request body is empty; expected a JSON object")
	default:
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return invalidRequest("field " + typeErr.Field + " has the wrong type")
		}
		return invalidRequest("request body is not valid JSON")
	}
}

// queryParam finds one query parameter without building the url.Values map
// that r.URL.Query() allocates on every call; validate runs it per request.
func queryParam(r *http.Request, name string) (value string, present bool) {
	for part := range strings.SplitSeq(r.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		return v, true
	}
	return "", false
}
