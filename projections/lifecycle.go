package projections

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/sessionledger/ledger/domain"
)

// The account lifecycle (domain/lifecycle.go): a user's latest challenge
// of each purpose (JSON domain.Challenge: hashes only, never a code or a
// link) under
//
//	h<user id>\x00<purpose>
//
// and the user of every challenge, for a link that names only its
// challenge, under
//
//	g<challenge id>          user id
//
// Password changes and resets rewrite the user's and the email's password
// hash, and revoke sessions as other_sessions_revoked does.
const (
	prefixChallenge     = 'h'
	prefixChallengeUser = 'g'
)

func challengePrefix(userID string) []byte {
	return append(append([]byte{prefixChallenge}, userID...), 0)
}
func challengeKey(userID string, p domain.Purpose) []byte {
	return append(challengePrefix(userID), p...)
}
func challengeUserKey(id string) []byte { return append([]byte{prefixChallengeUser}, id...) }

// foldChallenges applies an event to the user's challenges.
func foldChallenges(b *pebble.Batch, e domain.Event) error {
	cs, err := userChallenges(b, e.UserID)
	if err != nil {
		return err
	}
	m := make(map[domain.Purpose]domain.Challenge, len(cs))
	for _, c := range cs {
		m[c.Purpose] = c
	}
	changed, err := domain.FoldChallenges(m, e)
	if err != nil {
		return reject(RejectInvalid, err)
	}
	if !changed {
		return nil
	}
	if p, ok := domain.PurposeOf(e.Type); ok {
		if err := b.Set(challengeUserKey(m[p].ID), []byte(e.UserID), nil); err != nil {
			return err
		}
	}
	for p, c := range m {
		if err := b.Set(challengeKey(e.UserID, p), mustJSON(c), nil); err != nil {
			return err
		}
	}
	return nil
}

func userChallenges(r reader, userID string) ([]domain.Challenge, error) {
	prefix := challengePrefix(userID)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []domain.Challenge
	for ok := it.First(); ok; ok = it.Next() {
		var c domain.Challenge
		if err := json.Unmarshal(it.Value(), &c); err != nil {
			return nil, fmt.Errorf("challenge of %s: %w", userID, err)
		}
		out = append(out, c)
	}
	return out, it.Error()
}

// foldPassword applies password_changed and password_reset: the new hash,
// and the sessions they revoke.
func (p *Projection) foldPassword(b *pebble.Batch, e domain.Event, seq uint64) error {
	var hash string
	switch e.Type {
	case domain.EventPasswordChanged:
		pl, err := domain.DecodePayload[domain.PasswordChanged](e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		hash = pl.PasswordHash
	default:
		pl, err := domain.DecodePayload[domain.PasswordReset](e)
		if err != nil {
			return reject(RejectInvalid, err)
		}
		hash = pl.PasswordHash
		if err := foldChallenges(b, e); err != nil {
			return err
		}
	}
	var rec userRecord
	switch err := getJSON(b, userKey(e.UserID), &rec); {
	case errors.Is(err, pebble.ErrNotFound):
		return reject(RejectInvalid, fmt.Errorf("event %s: %s of an unknown user", e.ID, e.Type))
	case err != nil:
		return err
	}
	if hash == "" {
		return reject(RejectInvalid, fmt.Errorf("event %s: %s without a password hash", e.ID, e.Type))
	}
	rec.PasswordHash = hash
	if err := b.Set(userKey(e.UserID), mustJSON(rec), nil); err != nil {
		return err
	}
	if err := b.Set(emailKey(rec.EmailHash), mustJSON(emailRecord{UserID: e.UserID, PasswordHash: hash}), nil); err != nil {
		return err
	}
	return p.applyToUser(b, e, seq)
}

// ChallengeUser is the user of a challenge, or domain.ErrUserNotFound.
func (p *Projection) ChallengeUser(challengeID string) (string, error) {
	v, closer, err := p.db.Get(challengeUserKey(challengeID))
	if errors.Is(err, pebble.ErrNotFound) {
		return "", domain.ErrUserNotFound
	}
	if err != nil {
		return "", fmt.Errorf("challenge user: %w", err)
	}
	defer closer.Close()
	return string(v), nil
}
