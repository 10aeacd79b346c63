package main

import (
	"testing"
	"time"
)

// TestIntrospection: RFC 7662 over a form body, with the key: a valid
// token is active with its user, session and deadlines; a revoked, an
// unknown and a malformed one are only {"active":false}; the wrong body
// type, a missing token and a missing key are errors.
func TestIntrospection(t *testing.T) {
	l := startLedger(t, t.TempDir(), newClock())
	tok, uid, sid := l.signup(t, "intro@example.com", "introspected", true)
	form := func(body, contentType, key string) response {
		t.Helper()
		header := map[string]string{"Content-Type": contentType}
		if key != "" {
			header["X-API-Key"] = key
		}
		return doURL(t, l.URL(), "POST", "/v1/introspect", "", header, body)
	}
	const formType = "application/x-www-form-urlencoded"
	r := form("token="+tok, formType, testAdminKey)
	now := l.clock.Now()
	if r.Status != 200 || r.get("active") != true || r.str("sub") != uid || r.str("sid") != sid || r.str("token_type") != "Bearer" ||
		r.get("iat") != float64(now.Unix()) || r.get("exp") != float64(now.Add(30*24*time.Hour).Unix()) || r.get("max_exp") != float64(now.Add(365*24*time.Hour).Unix()) {
		t.Fatalf("valid token: %d %s", r.Status, r.Raw)
	}
	l.do(t, "POST", "/v1/auth/logout", tok, nil)
	for name, body := range map[string]string{"revoked": "token=" + tok, "unknown": "token=slt_0123456789abcdef0123456789abcdefAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed": "token=nonsense"} {
		if r := form(body, formType, testAdminKey); r.Status != 200 || r.Raw != "{\"active\":false}\n" {
			t.Errorf("%s token: %d %q, want only {\"active\":false}", name, r.Status, r.Raw)
		}
	}
	if r := form(`{"token":"x"}`, "application/json", testAdminKey); r.Status != 415 {
		t.Errorf("JSON body: %d %s, want 415", r.Status, r.Raw)
	}
	if r := form("token=a&token=b", formType, testAdminKey); r.Status != 400 || r.str("reason") != "INVALID_REQUEST" {
		t.Errorf("two tokens: %d %s, want 400", r.Status, r.Raw)
	}
	if r := form("token="+tok, formType, ""); r.Status != 401 {
		t.Errorf("without a key: %d %s, want 401", r.Status, r.Raw)
	}
}
