package projections

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/sessionledger/ledger/domain"
)

// A user's second factor (domain.MFA, JSON) under
//
//	m<user id>
//
// folded by domain.MFA.Apply from the MFA events: the TOTP secret only as
// sealed by ports.Secrets (never in clear), the last time step used, the
// hashes of the unused recovery codes and the hashes of the open login
// tickets. Absent when there is nothing to remember.
const prefixMFA = 'm'

func mfaKey(userID string) []byte { return append([]byte{prefixMFA}, userID...) }

// foldMFA applies an MFA event; mfa_failed also counts towards the
// account's failed logins.
func foldMFA(b *pebble.Batch, e domain.Event) error {
	if e.UserID == "" {
		return reject(RejectInvalid, fmt.Errorf("event %s: %s without a user", e.ID, e.Type))
	}
	if e.Type == domain.EventMFAFailed {
		return foldFailures(b, b, e)
	}
	m, err := getMFA(b, e.UserID)
	if err != nil {
		return err
	}
	if m, err = m.Apply(e); err != nil {
		return reject(RejectInvalid, err)
	}
	if m.IsZero() {
		return b.Delete(mfaKey(e.UserID), nil)
	}
	return b.Set(mfaKey(e.UserID), mustJSON(m), nil)
}

func getMFA(r reader, userID string) (domain.MFA, error) {
	var m domain.MFA
	err := getJSON(r, mfaKey(userID), &m)
	if errors.Is(err, pebble.ErrNotFound) {
		return domain.MFA{}, nil
	}
	if err != nil {
		return m, fmt.Errorf("second factor of %s: %w", userID, err)
	}
	return m, nil
}

// UserMFA is a user's second factor as folded.
func (p *Projection) UserMFA(userID string) (domain.MFA, error) {
	return getMFA(p.db, userID)
}
