package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/ports"
	"github.com/sessionledger/ledger/handlers/query"
)

// errorTable is the one place where an error of the application becomes an
// HTTP status and a reason. The first row whose error matches (errors.Is)
// wins; anything else is a 500 INTERNAL_ERROR. README's error table lists
// the same rows.
var errorTable = []struct {
	err        error
	status     int
	reason     string
	message    string
	retryAfter int // seconds, for a Retry-After header; 0: none
}{
	{query.ErrTokenInvalid, http.StatusUnauthorized, "TOKEN_INVALID", "token is not valid", 0},
	{domain.ErrSessionNotActive, http.StatusUnauthorized, "TOKEN_INVALID", "token is not valid", 0},
	{domain.ErrInvalidCredentials, http.StatusBadRequest, "INVALID_LOGIN_CREDENTIALS", "email or password is incorrect", 0},
	{domain.ErrInvalidEmail, http.StatusBadRequest, "INVALID_EMAIL", "email address is not valid", 0},
	{domain.ErrWeakPassword, http.StatusBadRequest, "WEAK_PASSWORD", "password must be 8 to 1024 characters long", 0},
	{domain.ErrEmailTaken, http.StatusConflict, "EMAIL_TAKEN", "an account with this email already exists", 0},
	{query.ErrInvalidLimit, http.StatusBadRequest, "INVALID_REQUEST", "limit must be a whole number from 1 to 200", 0},
	{query.ErrInvalidCursor, http.StatusBadRequest, "INVALID_REQUEST", "cursor is not one this API returned; start again without it", 0},
	{query.ErrInvalidStatus, http.StatusBadRequest, "INVALID_REQUEST", "status must be all, or absent for live sessions only", 0},
	// Retry-After comes from the error itself (see retryAfterOf).
	{domain.ErrTooManyAttempts, http.StatusTooManyRequests, "TOO_MANY_ATTEMPTS", "too many failed logins for this account; retry later", 1},
	{domain.ErrSessionNotFound, http.StatusNotFound, "SESSION_NOT_FOUND", "no such session", 0},
	{query.ErrUnknownUser, http.StatusNotFound, "USER_NOT_FOUND", "no such user", 0},
	{query.ErrNoFeed, http.StatusNotFound, "NOT_FOUND", "this instance serves no revocation feed", 0},
	// The token's user is gone from this instance's view: treat the token
	// like any unknown one.
	{domain.ErrUserNotFound, http.StatusUnauthorized, "TOKEN_INVALID", "token is not valid", 0},
	{command.ErrTooMuchContention, http.StatusServiceUnavailable, "BUSY", "too many concurrent changes to this account; retry", 1},
	{command.ErrBusy, http.StatusServiceUnavailable, "BUSY", "too many password checks at once; retry shortly", 1},
	{ports.ErrRejected, http.StatusServiceUnavailable, "BUSY", "the write was not accepted (the signing key was just rotated); retry", 1},
	{ports.ErrStreamMissing, http.StatusServiceUnavailable, "STREAM_MISSING", "the ledger stream does not exist; an operator must restore it", 0},
	{ports.ErrStreamSealed, http.StatusServiceUnavailable, "STREAM_SEALED", "the ledger stream is sealed and takes no writes; an operator must look at it", 0},
	{ports.ErrStreamFull, http.StatusServiceUnavailable, "STREAM_FULL", "the ledger stream refuses new messages (a limit was set on it); an operator must look at it", 0},
	{ports.ErrStreamTampered, http.StatusServiceUnavailable, "STREAM_TAMPERED", "the ledger stream lost messages; this instance will not write past them", 0},
	{domain.ErrKeyUnavailable, http.StatusServiceUnavailable, "SIGNING_KEY_UNAVAILABLE", "this instance does not hold the signing key in force; give it the ledger's key file", 0},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "UNAVAILABLE", "the ledger did not answer in time; retry", 0},
	{context.Canceled, http.StatusServiceUnavailable, "UNAVAILABLE", "the ledger did not answer in time; retry", 0},
	// Personal API keys (apikeys.go).
	{domain.ErrTooManyAPIKeys, http.StatusConflict, "TOO_MANY_API_KEYS", "this account holds as many API keys as it may; revoke one first", 0},
	{domain.ErrAPIKeyNotFound, http.StatusNotFound, "API_KEY_NOT_FOUND", "no such API key", 0},
	{domain.ErrInvalidAPIKeyName, http.StatusBadRequest, "INVALID_REQUEST", "name must be 1 to 100 characters, without control characters", 0},
	{domain.ErrInvalidAPIKeyTTL, http.StatusBadRequest, "INVALID_REQUEST", "expires_in must be a whole number of seconds from 1 to 315360000 (10 years)", 0},
	{query.ErrAPIKeyInvalid, http.StatusUnauthorized, "API_KEY_INVALID", "the API key is not valid", 0},
	{query.ErrAppKeyInvalid, http.StatusUnauthorized, "APP_KEY_INVALID", "this endpoint needs the key of a registered app in X-API-Key", 0},
	{domain.ErrInvalidRole, http.StatusBadRequest, "INVALID_REQUEST", "role must be admin, user or guest", 0},
	{domain.ErrInvalidScope, http.StatusBadRequest, "INVALID_REQUEST", "scopes must be a non-empty list of validate, introspect, feed, audit, admin, none twice", 0},
	{domain.ErrInvalidName, http.StatusBadRequest, "INVALID_REQUEST", "name must be 1 to 100 printable characters", 0},
	{domain.ErrInvalidNote, http.StatusBadRequest, "INVALID_REQUEST", "actor must be at most 200 and note at most 1000 printable characters", 0},
	{domain.ErrKeyNotFound, http.StatusNotFound, "KEY_NOT_FOUND", "no such service key", 0},
	{domain.ErrAppNotFound, http.StatusNotFound, "APP_NOT_FOUND", "no such app", 0},
	// The account lifecycle (lifecycle.go).
	{domain.ErrInvalidCode, http.StatusBadRequest, "INVALID_CODE", "the code or link is wrong, expired, used, or was tried too often; request a new one", 0},
	{command.ErrEmailNotConfigured, http.StatusServiceUnavailable, "EMAIL_NOT_CONFIGURED", "this ledger has no email delivery configured (--smtp-url, --notify-webhook or --dev-print-codes)", 0},
	{command.ErrLifecycleUnavailable, http.StatusServiceUnavailable, "NOT_READY", "this endpoint is not configured on this instance", 0},
	// The second factor (mfa.go). MFA_REQUIRED carries its ticket (errorFor).
	{domain.ErrMFARequired, http.StatusUnauthorized, "MFA_REQUIRED", "this account has a second factor: send mfa_ticket and a code (or a recovery_code) to POST /v1/auth/login/mfa, or totp_code with the password", 0},
	{domain.ErrMFACodeInvalid, http.StatusBadRequest, "MFA_CODE_INVALID", "the code is not valid (wrong, already used, or not of the current 30-second step)", 0},
	{domain.ErrMFATicketInvalid, http.StatusUnauthorized, "MFA_TICKET_INVALID", "the mfa_ticket is not valid (unknown, used or expired): log in again", 0},
	{domain.ErrMFAAlreadyEnabled, http.StatusConflict, "MFA_ALREADY_ENABLED", "a second factor is already enabled for this account; disable it first", 0},
	{domain.ErrMFANotEnabled, http.StatusConflict, "MFA_NOT_ENABLED", "no second factor is enabled for this account", 0},
	{domain.ErrMFANotPending, http.StatusConflict, "MFA_NOT_PENDING", "no enrolment is pending: POST /v1/mfa/totp first", 0},
	// The per-address limits (ratelimit.go) set their own Retry-After.
	{errRateLimited, http.StatusTooManyRequests, "RATE_LIMITED", "too many requests from this address; retry after Retry-After seconds", 1},
}

// errorFor is the error table's answer for err (errInternal if no row).
func errorFor(err error) *apiError {
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			e := newError(row.status, row.reason, row.message)
			e.retryAfter = max(row.retryAfter, retryAfterOf(err))
			var m *domain.MFARequiredError
			if errors.As(err, &m) {
				e = mfaRequired(e, m)
			}
			return e
		}
	}
	return errInternal
}

// retryAfterOf is how many whole seconds an error that knows when to retry
// (a throttle) says to wait, rounded up; 0 if it does not say.
func retryAfterOf(err error) int {
	var t *domain.ThrottledError
	if !errors.As(err, &t) {
		return 0
	}
	d := t.RetryAfter()
	return int((d + time.Second - 1) / time.Second)
}
