package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"net/mail"
	"strings"
	"unicode/utf8"
)

const (
	maxEmailLen    = 254
	MinPasswordLen = 8
	// MaxPasswordLen bounds the work an attacker can ask of the hasher.
	MaxPasswordLen = 1024
)

// NormalizeEmail returns the canonical form of an address: trimmed and
// lower-cased, because emails compare case-insensitively for uniqueness and
// login. Display names ("Ann <a@b.c>") and addresses without a dotted domain
// are rejected.
func NormalizeEmail(raw string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(raw))
	if e == "" || len(e) > maxEmailLen || !utf8.ValidString(e) {
		return "", ErrInvalidEmail
	}
	addr, err := mail.ParseAddress(e)
	if err != nil || addr.Name != "" || addr.Address != e {
		return "", ErrInvalidEmail
	}
	at := strings.LastIndexByte(e, '@')
	domainPart := e[at+1:]
	if at < 1 || !strings.Contains(domainPart, ".") || strings.HasPrefix(domainPart, ".") || strings.HasSuffix(domainPart, ".") {
		return "", ErrInvalidEmail
	}
	return e, nil
}

// EmailHash identifies a normalized email without spelling it out; it names
// the email's claim subject and appears in login_failed events, so an auditor
// can match attempts against a known address while the log never stores
// attacker-supplied addresses verbatim.
func EmailHash(normalized string) string {
	sum := sha256.Sum256([]byte(normalized))
	return hex.EncodeToString(sum[:])
}

// ValidatePassword enforces the password policy before anything is hashed.
func ValidatePassword(pw string) error {
	if utf8.RuneCountInString(pw) < MinPasswordLen || len(pw) > MaxPasswordLen {
		return ErrWeakPassword
	}
	return nil
}
