package httpapi

import (
	"math"
	"net/http"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
)

// The second factor: a logged-in user enrols a TOTP secret and confirms it
// with a code (POST /v1/mfa/totp, /v1/mfa/totp/confirm), and turns it off
// with a current code (DELETE /v1/mfa/totp); a login of an enrolled user
// answers 401 MFA_REQUIRED with a ticket, redeemed with a code or a
// recovery code (POST /v1/auth/login/mfa, a credential route) for a
// session of assurance level aal2.

type mfaCodeRequest struct {
	Code *string `json:"code"`
}

type mfaLoginRequest struct {
	MFATicket    *string `json:"mfa_ticket"`
	Code         *string `json:"code"`
	RecoveryCode *string `json:"recovery_code"`
}

// mfaEnrolmentResponse is the only answer that ever holds the secret.
type mfaEnrolmentResponse struct {
	OTPAuthURI string `json:"otpauth_uri"`
	Secret     string `json:"secret"`
	Seq        uint64 `json:"seq"`
}

// mfaConfirmedResponse is the only answer that ever holds the recovery
// codes.
type mfaConfirmedResponse struct {
	RecoveryCodes []string `json:"recovery_codes"`
	Seq           uint64   `json:"seq"`
}

// Assurance levels (NIST SP 800-63B) a session reports: aal2 with a second
// factor, aal1 without.
const (
	AAL1 = "aal1"
	AAL2 = "aal2"
)

func aalOf(mfa bool) string {
	if mfa {
		return AAL2
	}
	return AAL1
}

// errStepUp is validate's (and gateway mode's) answer for a valid session
// without the second factor a caller required.
func errStepUp() *apiError {
	return newError(http.StatusForbidden, "STEP_UP_REQUIRED", "the session is valid, but its assurance level is aal1: log in with a second factor (aal2)")
}

// readCode reads a {code} body.
func readCode(w http.ResponseWriter, r *http.Request) (string, bool) {
	var req mfaCodeRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return "", false
	}
	if req.Code == nil {
		writeError(w, invalidRequest("code is required"))
		return "", false
	}
	return *req.Code, true
}

func (a *API) startMFA(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	en, err := a.cfg.Commands.StartMFA.Handle(r.Context(), caller)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusCreated, mfaEnrolmentResponse{OTPAuthURI: en.OTPAuthURI, Secret: en.Secret, Seq: en.Seq}, en.Seq)
}

func (a *API) confirmMFA(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	code, ok := readCode(w, r)
	if !ok {
		return
	}
	c, err := a.cfg.Commands.ConfirmMFA.Handle(r.Context(), caller, code)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, mfaConfirmedResponse{RecoveryCodes: c.RecoveryCodes, Seq: c.Seq}, c.Seq)
}

func (a *API) disableMFA(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	code, ok := readCode(w, r)
	if !ok {
		return
	}
	seq, err := a.cfg.Commands.DisableMFA.Handle(r.Context(), caller, code)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, seqResponse{Seq: seq}, seq)
}

func (a *API) mfaLogin(w http.ResponseWriter, r *http.Request) {
	var req mfaLoginRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.MFATicket == nil || (req.Code == nil) == (req.RecoveryCode == nil) {
		writeError(w, invalidRequest("mfa_ticket and one of code or recovery_code are required"))
		return
	}
	is, err := a.cfg.Commands.MFALogin.Handle(r.Context(), command.MFACredentials{Ticket: *req.MFATicket, Code: req.Code, RecoveryCode: req.RecoveryCode})
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, issuedBody(is), is.Seq)
}

// mfaRequired is the 401 of a login that needs its second factor: the
// ticket, in the body only (args.mfa_ticket, and mfa_ticket beside
// reason), and how long it lasts.
func mfaRequired(e *apiError, m *domain.MFARequiredError) *apiError {
	c := *e
	c.MFATicket = m.Ticket
	c.Args = map[string]any{"mfa_ticket": m.Ticket, "expires_in": int(math.Round(m.ExpiresIn.Seconds()))}
	return &c
}
