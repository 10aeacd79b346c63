package httpapi

import (
	"encoding/json"
	"time"
)

// validBody is validate's 200 answer before its times are formatted.
// Validate encodes it with appendJSON, which writes what encoding/json
// writes for its validResponse, byte for byte (TestValidBodyAppendJSON
// holds the two together), without reflection, without the string of
// each time, and into a pooled buffer: writing the answer through
// encoding/json was about a third of the CPU validate's handler took in
// the server's profile (100k sessions, touch=false).
type validBody struct {
	aal, method, role, sessionID, userID   string
	expiresAt, idleExpiresAt, maxExpiresAt time.Time
	keepLoggedIn, mfa                      bool
}

// response is the body as encoding/json encodes it (the documented
// shape; validResponse).
func (v validBody) response() validResponse {
	return validResponse{
		Valid: true, UserID: v.userID, SessionID: v.sessionID,
		ExpiresAt: v.expiresAt.Format(rfc3339), IdleExpiresAt: v.idleExpiresAt.Format(rfc3339),
		MaxExpiresAt: v.maxExpiresAt.Format(rfc3339),
		Method:       v.method, KeepLoggedIn: v.keepLoggedIn, MFA: v.mfa, AAL: v.aal, Role: v.role,
	}
}

// appendJSON appends json.NewEncoder(w).Encode(v.response())'s bytes,
// newline included: the members in validResponse's order.
func (v validBody) appendJSON(b []byte) []byte {
	b = append(b, `{"aal":`...)
	b = appendJSONString(b, v.aal)
	b = append(b, `,"expires_at":`...)
	b = appendJSONTime(b, v.expiresAt)
	b = append(b, `,"idle_expires_at":`...)
	b = appendJSONTime(b, v.idleExpiresAt)
	b = append(b, `,"keep_logged_in":`...)
	b = appendJSONBool(b, v.keepLoggedIn)
	b = append(b, `,"max_expires_at":`...)
	b = appendJSONTime(b, v.maxExpiresAt)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, v.method)
	b = append(b, `,"mfa":`...)
	b = appendJSONBool(b, v.mfa)
	b = append(b, `,"role":`...)
	b = appendJSONString(b, v.role)
	b = append(b, `,"session_id":`...)
	b = appendJSONString(b, v.sessionID)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, v.userID)
	return append(b, `,"valid":true}`+"\n"...)
}

func appendJSONBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// appendJSONTime appends t as encoding/json writes t.Format(rfc3339):
// RFC 3339 is digits, '-', ':', 'T', 'Z' and '+', none of which it
// escapes.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, rfc3339)
	return append(b, '"')
}

// appendJSONString appends s as encoding/json writes it. A string of
// printable ASCII without a character encoding/json escapes (", \ and,
// for HTML, <, > and &: ids, methods, roles, times) is copied between
// quotes; anything else goes through encoding/json itself, so the rules
// for control characters, invalid UTF-8 and U+2028 stay its own.
func appendJSONString(b []byte, s string) []byte {
	if plainJSON(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// plainJSON reports whether encoding/json writes s as it is, between quotes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

// plainByte is printable ASCII but for the characters encoding/json
// escapes (", \ and, for HTML, <, > and &). DEL (0x7f), which it writes
// as it is, is left out: a string with one goes through encoding/json.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()
