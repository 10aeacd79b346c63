package httpapi

import (
	"errors"
	"net/http"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
)

// The account lifecycle: password change (Bearer), password reset and
// login by an emailed code or link (everyone; credential routes).

type changePasswordRequest struct {
	CurrentPassword     *string `json:"current_password"`
	NewPassword         *string `json:"new_password"`
	RevokeOtherSessions *bool   `json:"revoke_other_sessions"` // absent: true
}

type emailRequest struct {
	Email *string `json:"email"`
}

type resetRequest struct {
	Email       *string `json:"email"`
	Code        *string `json:"code"`
	Token       *string `json:"token"`
	NewPassword *string `json:"new_password"`
}

type codeLoginRequest struct {
	Email        *string `json:"email"`
	Code         *string `json:"code"`
	Token        *string `json:"token"`
	KeepLoggedIn *bool   `json:"keep_logged_in"`
}

// acceptedResponse is what a code request answers, whatever the email:
// never a seq (it would tell that something was appended).
type acceptedResponse struct{}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (a *API) lifecycleReady(w http.ResponseWriter, r *http.Request) bool {
	if !a.cfg.Lifecycle.Configured() {
		a.writeDomainError(w, r, command.ErrLifecycleUnavailable)
		return false
	}
	return true
}

func (a *API) changePassword(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	var req changePasswordRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if !a.lifecycleReady(w, r) {
		return
	}
	if req.CurrentPassword == nil || req.NewPassword == nil {
		writeError(w, invalidRequest("current_password and new_password are required"))
		return
	}
	revokeOthers := req.RevokeOtherSessions == nil || *req.RevokeOtherSessions
	n, seq, err := a.cfg.Lifecycle.ChangePassword.Handle(r.Context(), caller, command.PasswordChange{
		Current: *req.CurrentPassword, New: *req.NewPassword, RevokeOtherSessions: revokeOthers,
	})
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, revokedResponse{Revoked: n, Seq: seq}, seq)
}

func (a *API) requestReset(w http.ResponseWriter, r *http.Request) {
	a.requestCode(w, r, a.cfg.Lifecycle.RequestReset)
}

func (a *API) requestLoginCode(w http.ResponseWriter, r *http.Request) {
	a.requestCode(w, r, a.cfg.Lifecycle.RequestLogin)
}

// requestCode answers 202 for every well-formed email, known or not;
// whatever went wrong behind it is logged, never told.
func (a *API) requestCode(w http.ResponseWriter, r *http.Request, h command.RequestCodeHandler) {
	var req emailRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if !a.lifecycleReady(w, r) {
		return
	}
	if req.Email == nil {
		writeError(w, invalidRequest("email is required"))
		return
	}
	switch err := h.Handle(r.Context(), *req.Email); {
	case errors.Is(err, domain.ErrInvalidEmail), errors.Is(err, command.ErrEmailNotConfigured):
		a.writeDomainError(w, r, err)
		return
	case err != nil:
		a.log.Error("code request failed; answered as if sent", "route", r.Pattern, "err", err)
	}
	success(w, http.StatusAccepted, acceptedResponse{})
}

// codeAnswer reads a code with its email, or a link's token.
func codeAnswer(email, code, token *string) (command.CodeAnswer, *apiError) {
	switch {
	case token != nil && code == nil:
		return command.CodeAnswer{Email: deref(email), Token: *token}, nil
	case code != nil && token == nil && email != nil:
		return command.CodeAnswer{Email: *email, Code: *code}, nil
	}
	return command.CodeAnswer{}, invalidRequest("give email and code, or token")
}

func (a *API) resetPassword(w http.ResponseWriter, r *http.Request) {
	var req resetRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if !a.lifecycleReady(w, r) {
		return
	}
	ans, e := codeAnswer(req.Email, req.Code, req.Token)
	if e == nil && req.NewPassword == nil {
		e = invalidRequest("new_password is required")
	}
	if e != nil {
		writeError(w, e)
		return
	}
	res, err := a.cfg.Lifecycle.ResetPassword.Handle(r.Context(), command.ResetRequest{CodeAnswer: ans, NewPassword: *req.NewPassword})
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, revokedResponse{Revoked: res.Revoked, Seq: res.Seq}, res.Seq)
}

func (a *API) codeLogin(w http.ResponseWriter, r *http.Request) {
	a.codeLoginBy(w, r, false)
}

func (a *API) magicLogin(w http.ResponseWriter, r *http.Request) {
	a.codeLoginBy(w, r, true)
}

func (a *API) codeLoginBy(w http.ResponseWriter, r *http.Request, link bool) {
	var req codeLoginRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if !a.lifecycleReady(w, r) {
		return
	}
	var ans command.CodeAnswer
	var e *apiError
	switch {
	case link && (req.Token == nil || req.Code != nil || req.Email != nil):
		e = invalidRequest("token is required (and only it, with keep_logged_in)")
	case !link && (req.Email == nil || req.Code == nil || req.Token != nil):
		e = invalidRequest("email and code are required")
	default:
		ans, e = codeAnswer(req.Email, req.Code, req.Token)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	l := command.CodeLogin{CodeAnswer: ans}
	if req.KeepLoggedIn != nil {
		l.KeepLoggedIn = *req.KeepLoggedIn
	}
	is, err := a.cfg.Lifecycle.CodeLogin.Handle(r.Context(), l)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, issuedBody(is), is.Seq)
}
