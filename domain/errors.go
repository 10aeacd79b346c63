package domain

import "errors"

// Domain errors. Ports map them to responses; nothing here knows about HTTP.
var (
	ErrInvalidEmail     = errors.New("invalid email address")
	ErrWeakPassword     = errors.New("password too weak")
	ErrEmailTaken       = errors.New("email already registered")
	ErrUserNotFound     = errors.New("user not found")
	ErrSessionNotFound  = errors.New("session not found")
	ErrSessionNotActive = errors.New("session is not active")
	ErrMalformedToken   = errors.New("malformed token")
	ErrUnknownEvent     = errors.New("unknown event type")
)

// ErrInvalidCredentials covers both an unknown email and a wrong password, so
// a login response never tells which accounts exist.
var ErrInvalidCredentials = errors.New("invalid login credentials")
