package httpapi

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// IntrospectPath is OAuth 2.0 token introspection (RFC 7662): what a
// resource server that already speaks OAuth asks instead of validate.
const IntrospectPath = "/v1/introspect"

// introspection is RFC 7662's answer. An inactive token is only
// {"active":false}: the RFC forbids saying why, and the caller learns
// nothing it could probe tokens with.
type introspection struct {
	Active    bool   `json:"active"`
	Sub       string `json:"sub,omitempty"`        // the user id
	SID       string `json:"sid,omitempty"`        // the session id
	Exp       int64  `json:"exp,omitempty"`        // the session's next deadline (idle or max), Unix seconds
	Iat       int64  `json:"iat,omitempty"`        // when the session started
	TokenType string `json:"token_type,omitempty"` // Bearer
	// Beyond the RFC's registered names, as it allows.
	MaxExp       int64 `json:"max_exp,omitempty"`
	KeepLoggedIn *bool `json:"keep_logged_in,omitempty"`
	MFA          *bool `json:"mfa,omitempty"`
}

// introspect answers POST token=… (application/x-www-form-urlencoded, as
// RFC 7662 requires). It counts as a use of the session, like validate:
// a resource server that introspects instead of validating keeps its
// users' sessions alive the same way.
func (a *API) introspect(w http.ResponseWriter, r *http.Request) {
	token, e := formToken(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	v, err := a.cfg.Queries.Validate.Handle(r.Context(), token, true)
	// Whatever validate would answer TOKEN_INVALID (the error table decides)
	// is an inactive token here, not a failure.
	if err != nil && errorFor(err).Reason != "TOKEN_INVALID" {
		a.writeDomainError(w, r, err)
		return
	}
	if err != nil || !v.Verdict.Valid { // err: TOKEN_INVALID
		writeJSON(w, http.StatusOK, introspection{Active: false})
		return
	}
	s := &v.Session
	keep, mfa := s.KeepLoggedIn(), s.MFA()
	writeJSON(w, http.StatusOK, introspection{
		Active: true, Sub: s.UserID(), SID: s.ID(), TokenType: "Bearer",
		Exp: v.Verdict.ExpiresAt().Unix(), Iat: s.StartedAt().Unix(), MaxExp: v.Verdict.MaxExpiresAt.Unix(),
		KeepLoggedIn: &keep, MFA: &mfa,
	})
}

// formToken reads the token parameter of a form body, bounded like every
// body, strictly: one token, and nothing but form parameters.
func formToken(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return "", newError(http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE", "introspection takes a form: Content-Type: application/x-www-form-urlencoded, body token=…")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return "", errBodyTooLarge
	case err != nil:
		return "", invalidRequest("the request body could not be read")
	}
	form, err := url.ParseQuery(strings.TrimSpace(string(body)))
	if err != nil {
		return "", invalidRequest("the body is not a valid form")
	}
	tokens := form["token"]
	if len(tokens) != 1 || tokens[0] == "" {
		return "", invalidRequest("the form needs exactly one token parameter")
	}
	return tokens[0], nil
}
