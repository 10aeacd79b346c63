package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/handlers/ports"
)

// Session is the validate hot path: a cache hit, or one Pebble get and a
// fixed-layout decode.
func (p *Projection) Session(id string) (*domain.Session, error) {
	if snap, ok := p.cache.get(id); ok {
		return domain.SessionFromSnapshot(snap), nil
	}
	return p.loadSession(id)
}

// loadSession reads a session the cache did not have from Pebble, and
// caches it.
func (p *Projection) loadSession(id string) (*domain.Session, error) {
	p.metrics.cacheMisses.Inc()
	gen := p.cache.gen.Load()
	s, err := getSession(p.db, id)
	if err == nil {
		p.cache.put(s.Snapshot(), gen)
	}
	return s, err
}

// SessionState is Session by value, for validate: a cache hit puts
// nothing of the session on the heap but its user id (Session allocates
// the whole state, some 200 bytes the collector must then scan and free,
// on every validate).
func (p *Projection) SessionState(id string) (domain.Session, error) {
	if snap, ok := p.cache.get(id); ok {
		return *domain.SessionFromSnapshot(snap), nil
	}
	s, err := p.loadSession(id)
	if err != nil {
		return domain.Session{}, err
	}
	return *s, nil
}

// UserOfSession is the user a session belongs to.
func (p *Projection) UserOfSession(_ context.Context, sessionID string) (string, error) {
	s, err := p.Session(sessionID)
	if err != nil {
		return "", err
	}
	return s.UserID(), nil
}

// Credentials returns the user id and password hash registered for a
// normalized email, or domain.ErrUserNotFound (also once the user is
// erased). The email is looked up by its hash: the projection holds no
// email.
func (p *Projection) Credentials(email string) (userID, passwordHash string, err error) {
	var rec emailRecord
	err = getJSON(p.db, emailKey(domain.EmailHash(email)), &rec)
	if errors.Is(err, pebble.ErrNotFound) {
		return "", "", domain.ErrUserNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("credentials: %w", err)
	}
	return rec.UserID, rec.PasswordHash, nil
}

// LoadUser reads a user aggregate and the version of the user's subject
// (last sequence, chain head, time of the last authentic event) from one
// consistent snapshot; the version is what the next append must find. A
// user with no events yet is nil. The user holds its hot sessions (every
// one that may be live; see fold) and, dead or not, those of sessionIDs
// that are the user's.
func (p *Projection) LoadUser(userID string, sessionIDs ...string) (*domain.User, eventstore.Version, error) {
	snap := p.db.NewSnapshot()
	defer snap.Close()
	version, err := getVersion(snap, eventstore.UserSubject(userID))
	if err != nil {
		return nil, version, fmt.Errorf("load user version: %w", err)
	}
	var rec userRecord
	err = getJSON(snap, userKey(userID), &rec)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, version, nil
	}
	if err != nil {
		return nil, version, fmt.Errorf("load user: %w", err)
	}
	sessions, err := userSessions(snap, userID)
	if err != nil {
		return nil, version, fmt.Errorf("load user sessions: %w", err)
	}
	for _, id := range sessionIDs {
		if slices.ContainsFunc(sessions, func(s *domain.Session) bool { return s.ID() == id }) {
			continue
		}
		switch s, err := getSession(snap, id); {
		case errors.Is(err, domain.ErrSessionNotFound):
		case err != nil:
			return nil, version, fmt.Errorf("load user sessions: %w", err)
		case s.UserID() == userID:
			sessions = append(sessions, s)
		}
	}
	failures, err := getFailures(snap, userID)
	if err != nil {
		return nil, version, err
	}
	keys, err := userAPIKeys(snap, userID)
	if err != nil {
		return nil, version, fmt.Errorf("load user api keys: %w", err)
	}
	role, err := getRole(snap, userID)
	if err != nil {
		return nil, version, err
	}
	challenges, err := userChallenges(snap, userID)
	if err != nil {
		return nil, version, fmt.Errorf("load user challenges: %w", err)
	}
	mfa, err := getMFA(snap, userID)
	if err != nil {
		return nil, version, err
	}
	return domain.NewUser(userID, rec.EmailHash, rec.PasswordHash, sessions).WithFailures(failures).WithAPIKeys(keys).WithRole(role).WithChallenges(challenges).WithMFA(mfa).WithErased(rec.Erased), version, nil
}

// LoginFailures is a user's recent failed logins, which decide whether the
// next login is throttled.
func (p *Projection) LoginFailures(userID string) (domain.LoginFailures, error) {
	return getFailures(p.db, userID)
}

// UserSessions lists a user's sessions newest first (by start time, then
// id), from one consistent snapshot: those after `after` (nil: from the
// newest), at most limit of those keep accepts. With liveOnly it walks only
// the hot index, whose sessions include every live one; otherwise every
// session the user ever had. more says whether keep accepts another one
// after the page.
func (p *Projection) UserSessions(userID string, liveOnly bool, after *ports.SessionPosition, limit int, keep func(*domain.Session) bool) (page []*domain.Session, more bool, err error) {
	index := byte(prefixAllIndex)
	if liveOnly {
		index = prefixUserIndex
	}
	prefix := indexPrefix(index, userID)
	lower := prefix
	if after != nil {
		// Just past after's own entry: ids have one length, so a
		// zero byte after one sorts before any following entry.
		lower = append(appendPosition(slices.Clone(prefix), after.StartedAt, after.SessionID), 0)
	}
	snap := p.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		s, err := getSession(snap, sessionOfIndexKey(prefix, it.Key()))
		if err != nil {
			return nil, false, fmt.Errorf("list sessions: %w", err)
		}
		if keep != nil && !keep(s) {
			continue
		}
		if len(page) == limit {
			return page, true, nil
		}
		page = append(page, s)
	}
	return page, false, it.Error()
}

// UserVersion is the version of a user's subject as far as this projection
// has applied it: what the next append to that subject should expect.
func (p *Projection) UserVersion(userID string) (eventstore.Version, error) {
	return getVersion(p.db, eventstore.UserSubject(userID))
}

// SubjectVersion waits until the projection has applied seq, then returns
// the subject's version: its last sequence and the head and time of its
// last authentic event. It is the event store's only source of chain heads.
func (p *Projection) SubjectVersion(ctx context.Context, subject string, seq uint64) (eventstore.Version, error) {
	if err := p.WaitFor(ctx, seq); err != nil {
		if b := p.Blocked(); b != nil {
			return eventstore.Version{}, fmt.Errorf("%w (%w)", err, b)
		}
		return eventstore.Version{}, err
	}
	return getVersion(p.db, subject)
}

// Accepted waits until the projection has applied seq and reports whether
// the message there was applied (nil) or rejected (eventstore.ErrRejected).
func (p *Projection) Accepted(ctx context.Context, seq uint64) error {
	if err := p.WaitFor(ctx, seq); err != nil {
		return err
	}
	var r Rejected
	switch err := getJSON(p.db, rejectedKey(seq), &r); {
	case errors.Is(err, pebble.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("read outcome of seq %d: %w", seq, err)
	default:
		return fmt.Errorf("%w: seq %d: %s: %s", eventstore.ErrRejected, seq, r.Reason, r.Detail)
	}
}

// ClaimedUser is the user id of the email's authentic claim in force (the
// first, unless its user was erased), or domain.ErrUserNotFound.
func (p *Projection) ClaimedUser(emailHash string) (string, error) {
	v, closer, err := p.db.Get(claimKey(emailHash))
	if errors.Is(err, pebble.ErrNotFound) {
		return "", domain.ErrUserNotFound
	}
	if err != nil {
		return "", fmt.Errorf("email claim: %w", err)
	}
	defer closer.Close()
	return string(v), nil
}

func getVersion(r reader, subject string) (eventstore.Version, error) {
	v, closer, err := r.Get(versionKey(subject))
	if errors.Is(err, pebble.ErrNotFound) {
		return eventstore.Version{}, nil
	}
	if err != nil {
		return eventstore.Version{}, fmt.Errorf("version of %s: %w", subject, err)
	}
	defer closer.Close()
	return decodeVersion(v)
}

// Revocations are the sessions revoked by events after seq `after`, in
// stream order, at most limit of them, starting after the session
// afterSession at that sequence ("" for all of it).
func (p *Projection) Revocations(after uint64, afterSession string, limit int) ([]ports.Revocation, error) {
	lower := revocationKey(after, afterSession)
	lower = append(lower, 0) // strictly after
	if afterSession == "" {
		lower = revocationKey(after+1, "")
	}
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{prefixRevoked + 1}})
	if err != nil {
		return nil, err
	}
	var out []ports.Revocation
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		var r ports.Revocation
		if err := json.Unmarshal(it.Value(), &r); err != nil {
			it.Close()
			return nil, fmt.Errorf("revocation at %x: %w", it.Key(), err)
		}
		out = append(out, r)
	}
	return out, it.Close()
}
