package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStrictBodies: one byte string, one meaning. Names are exact, unknown
// and duplicate members, invalid UTF-8 and trailing data are refused, the
// media type must be JSON, and an oversize body is 413 whatever it holds.
func TestStrictBodies(t *testing.T) {
	big := strings.Repeat("x", MaxBodyBytes+1)
	cases := []struct {
		name, contentType, body string
		status                  int
		reason, mentions        string
	}{
		{"valid", "application/json", `{"email":"a@example.com","password":"p"}`, 0, "", ""},
		{"valid with charset", "application/json; charset=utf-8", `{"email":"a@example.com","password":"p"}`, 0, "", ""},
		{"field name in another case", "application/json", `{"EMAIL":"a@example.com","password":"p"}`, 400, "INVALID_REQUEST", `unknown field "EMAIL"`},
		{"unknown field", "application/json", `{"email":"a@example.com","password":"p","admin":true}`, 400, "INVALID_REQUEST", `unknown field "admin"`},
		{"duplicate field", "application/json", `{"email":"a@example.com","password":"p","password":"q"}`, 400, "INVALID_REQUEST", "twice"},
		{"invalid UTF-8 in a password", "application/json", "{\"email\":\"a@example.com\",\"password\":\"p\xff\"}", 400, "INVALID_REQUEST", "UTF-8"},
		{"trailing data", "application/json", `{"email":"a@example.com","password":"p"} {}`, 400, "INVALID_REQUEST", "not valid JSON"},
		{"wrong type", "application/json", `{"email":"a@example.com","password":7}`, 400, "INVALID_REQUEST", `"password" has the wrong type`},
		{"not an object", "application/json", `["a"]`, 400, "INVALID_REQUEST", "object"},
		{"empty", "application/json", ``, 400, "INVALID_REQUEST", "empty"},
		{"form content type", "application/x-www-form-urlencoded", `{"email":"a@example.com","password":"p"}`, 415, "UNSUPPORTED_MEDIA_TYPE", ""},
		{"no content type", "", `{"email":"a@example.com","password":"p"}`, 415, "UNSUPPORTED_MEDIA_TYPE", ""},
		{"latin-1 charset", "application/json; charset=iso-8859-1", `{"email":"a@example.com","password":"p"}`, 415, "UNSUPPORTED_MEDIA_TYPE", ""},
		{"oversize non-JSON", "application/json", big, 413, "BODY_TOO_LARGE", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v1/auth/login", strings.NewReader(c.body))
			if c.contentType != "" {
				r.Header.Set("Content-Type", c.contentType)
			}
			var dst credentialsRequest
			e := decodeBody(httptest.NewRecorder(), r, &dst)
			if c.status == 0 {
				if e != nil || dst.Email == nil || *dst.Email != "a@example.com" {
					t.Fatalf("valid body refused: %+v", e)
				}
				return
			}
			if e == nil || e.StatusCode != c.status || e.Reason != c.reason || !strings.Contains(e.Message, c.mentions) {
				t.Fatalf("got %+v, want %d %s mentioning %q", e, c.status, c.reason, c.mentions)
			}
			if strings.Contains(e.Message, "p\xff") || strings.Contains(e.Message, `"q"`) {
				t.Fatalf("the error echoes the body: %q", e.Message)
			}
		})
	}
}
