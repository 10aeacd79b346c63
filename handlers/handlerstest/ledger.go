// Package handlerstest is an in-memory fake of the ports the application
// (handlers/command, handlers/query, handlers/httpapi) uses: the log (the
// event store's appends, facts and histories) and the read side (the
// projection's users, sessions, credentials, claims and failed logins). It
// folds events with the domain's own functions (domain.SessionFromEvent,
// Session.Apply, LoginFailures.Apply), as the projection does, so a
// decision a handler makes is seen by the next read as it would be in
// production.
//
// It is for unit tests only, like net/http/httptest: integration tests run
// against real JetStream and Pebble. Non-test code must not import it (a
// test in handlers/ports enforces that).
//
// Where it is simpler than the adapters:
//   - It keeps no hot index: LoadUser and UserSessions with liveOnly see
//     every session of the user, dead or not, which their contracts allow
//     (a user may hold dead sessions; liveOnly may leave them out, keep
//     decides).
//   - Nothing is signed or chained: an event's id is given by the fake, a
//     version's Head is that id, and only sequences decide conflicts.
//   - Every append is applied at once: WaitFor never waits, and Accepted
//     reports only what RejectNext injected.
//   - UserVersion takes a context, as the log's does (command's eventLog).
package handlerstest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// Ledger is the log and its projection in memory. Its methods are safe for
// concurrent use. The zero value is not usable; call NewLedger.
type Ledger struct {
	mu sync.Mutex

	seq      uint64
	versions map[string]ports.Version       // subject -> version
	history  map[string][]ports.StoredEvent // subject -> messages, in log order
	rejected map[uint64]bool                // seqs the read side did not apply
	dedup    map[string]bool                // dedup keys of the facts stored

	// The read model.
	users    map[string]user                       // user id -> registration
	emails   map[string]string                     // email hash -> user id (not erased)
	claims   map[string]string                     // email hash -> user of the first claim
	sessions map[string]map[string]*domain.Session // user id -> session id -> session
	owners   map[string]string                     // session id -> user id
	failures map[string]domain.LoginFailures       // user id -> recent failed logins
	keys     map[string]map[string]domain.APIKey   // user id -> personal API keys not revoked
	mfa      map[string]domain.MFA                 // user id -> second factor

	// What the application asked for, for tests to inspect.
	appended []domain.Event
	facts    []ports.Fact

	// Injections.
	beforeAppend func(userID string) error
	rejectNext   int
	failFacts    error
}

type user struct {
	emailHash, passwordHash string
	erased                  bool
}

// NewLedger is an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{
		versions: map[string]ports.Version{}, history: map[string][]ports.StoredEvent{},
		rejected: map[uint64]bool{}, dedup: map[string]bool{},
		users: map[string]user{}, emails: map[string]string{}, claims: map[string]string{},
		sessions: map[string]map[string]*domain.Session{}, owners: map[string]string{},
		failures: map[string]domain.LoginFailures{}, keys: map[string]map[string]domain.APIKey{},
		mfa: map[string]domain.MFA{},
	}
}

// Subjects, named like the event store's; nothing parses them.
func userSubject(userID string) string     { return "user." + userID }
func emailSubject(emailHash string) string { return "email." + emailHash }
func useSubject(userID string) string      { return "use." + userID }

const anonSubject = "anon"

// --- Injections and inspection -------------------------------------------

// BeforeAppend sets a function AppendUser calls first, without the ledger's
// lock held (it may use the ledger, and the handlers): an error it returns
// (ports.ErrConflict) is AppendUser's, as if another instance had written
// first. nil removes it.
func (l *Ledger) BeforeAppend(fn func(userID string) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.beforeAppend = fn
}

// RejectNext makes the next n AppendUser calls land but be rejected, as the
// projection rejects an event signed with a key retired a moment before:
// the history's sequence moves on, its state does not, and Accepted reports
// ports.ErrRejected for them.
func (l *Ledger) RejectNext(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rejectNext = n
}

// FailFacts makes RecordFacts and RecordUses fail with err, storing nothing; nil heals it.
func (l *Ledger) FailFacts(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failFacts = err
}

// Appended is every event AppendUser appended and the read side accepted,
// in order, as stored (with its id and time).
func (l *Ledger) Appended() []domain.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.appended)
}

// Facts is every fact RecordFacts stored, in order, as it was given.
func (l *Ledger) Facts() []ports.Fact {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.facts)
}

// Rejected is how many messages landed but were rejected (see RejectNext).
func (l *Ledger) Rejected() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.rejected)
}

// --- The log ---------------------------------------------------------------

// AppendUser appends events to a user's history if it is at v, each given
// an id and a time no earlier than the history's (as the event store
// does), and folds them.
func (l *Ledger) AppendUser(_ context.Context, userID string, v ports.Version, events ...domain.Event) (ports.Version, error) {
	l.mu.Lock()
	hook := l.beforeAppend
	l.mu.Unlock()
	if hook != nil {
		if err := hook(userID); err != nil {
			return ports.Version{}, err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	subject := userSubject(userID)
	if l.versions[subject].Seq != v.Seq {
		return ports.Version{}, ports.ErrConflict
	}
	reject := l.rejectNext > 0
	if reject {
		l.rejectNext--
	}
	for _, e := range events {
		if reject {
			l.store(subject, e, ports.ErrRejected)
			continue
		}
		e, err := l.append(subject, e)
		if err != nil {
			return ports.Version{}, err
		}
		l.appended = append(l.appended, e)
	}
	return l.versions[subject], nil
}

// AppendEmailClaim appends a claim to an email's history if it is at v; the
// first claim holds.
func (l *Ledger) AppendEmailClaim(_ context.Context, emailHash string, v ports.Version, e domain.Event) (ports.Version, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	subject := emailSubject(emailHash)
	if l.versions[subject].Seq != v.Seq {
		return ports.Version{}, ports.ErrConflict
	}
	if _, err := l.append(subject, e); err != nil {
		return ports.Version{}, err
	}
	return l.versions[subject], nil
}

// RecordFacts appends facts at whatever version their histories have (a
// user's, or the one for no known user) and folds them; a fact whose
// DedupKey was stored before is counted but not stored again, as the log
// keeps one.
func (l *Ledger) RecordFacts(_ context.Context, facts []ports.Fact) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failFacts != nil {
		return 0, l.failFacts
	}
	for _, f := range facts {
		if f.DedupKey != "" {
			if l.dedup[f.DedupKey] {
				continue
			}
			l.dedup[f.DedupKey] = true
		}
		subject := anonSubject
		if f.Event.UserID != "" {
			subject = userSubject(f.Event.UserID)
		}
		if _, err := l.append(subject, f.Event); err != nil {
			return 0, err
		}
		l.facts = append(l.facts, f)
	}
	return len(facts), nil
}

// RecordUses appends uses, each to its user's use subject, standalone (no
// version read or checked), and folds them; a DedupKey stored before is not
// stored again. Facts reports them with the other facts.
func (l *Ledger) RecordUses(_ context.Context, facts []ports.Fact) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failFacts != nil {
		return 0, l.failFacts
	}
	for _, f := range facts {
		if f.Event.Type != domain.EventSessionUsed || f.Event.UserID == "" {
			return 0, fmt.Errorf("handlerstest: %s of user %q is not a use", f.Event.Type, f.Event.UserID)
		}
		if f.DedupKey != "" {
			if l.dedup[f.DedupKey] {
				continue
			}
			l.dedup[f.DedupKey] = true
		}
		// Standalone: no version to follow, and its time is its own.
		if err := l.fold(f.Event); err != nil {
			return 0, err
		}
		l.store(useSubject(f.Event.UserID), f.Event, nil)
		l.facts = append(l.facts, f)
	}
	return len(facts), nil
}

// UserVersion is a user's history's version now.
func (l *Ledger) UserVersion(_ context.Context, userID string) (ports.Version, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.versions[userSubject(userID)], nil
}

// EmailVersion is an email's history's version now.
func (l *Ledger) EmailVersion(_ context.Context, emailHash string) (ports.Version, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.versions[emailSubject(emailHash)], nil
}

// UserHistory is every message of a user's history, rejected ones with Err
// set.
func (l *Ledger) UserHistory(_ context.Context, userID string) ([]ports.StoredEvent, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := append(slices.Clone(l.history[userSubject(userID)]), l.history[useSubject(userID)]...)
	slices.SortFunc(h, func(a, b ports.StoredEvent) int { return cmp.Compare(a.Seq, b.Seq) })
	return h, nil
}

// EmailHistory is an email's claims and the user of the claim in force
// (the last accepted one: a later claim lands only after the erasure of
// the user before), or ports.ErrNotInLog.
func (l *Ledger) EmailHistory(_ context.Context, email string) (string, []ports.StoredEvent, error) {
	normalized, err := domain.NormalizeEmail(email)
	if err != nil {
		return "", nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	history := l.history[emailSubject(domain.EmailHash(normalized))]
	userID := ""
	for _, se := range history {
		if se.Err == nil && se.Event.Type == domain.EventEmailClaimed {
			userID = se.Event.UserID
		}
	}
	if userID == "" {
		return "", nil, fmt.Errorf("email %s: %w", normalized, ports.ErrNotInLog)
	}
	return userID, slices.Clone(history), nil
}

// append stores e on subject, with an id and a time no earlier than the
// subject's, and folds it (under mu).
func (l *Ledger) append(subject string, e domain.Event) (domain.Event, error) {
	e.Time = domain.NextEventTime(e.Time, l.versions[subject].Time)
	if err := l.fold(e); err != nil {
		return e, err
	}
	se := l.store(subject, e, nil)
	l.versions[subject] = ports.Version{Seq: se.Seq, Head: se.Event.ID, Time: se.Event.Time}
	return se.Event, nil
}

// store puts a message on subject (under mu), giving its event an id if it
// has none. A rejected one moves the subject's sequence only, as the
// projection records it.
func (l *Ledger) store(subject string, e domain.Event, rejected error) ports.StoredEvent {
	l.seq++
	if e.ID == "" {
		e.ID = fmt.Sprintf("event-%d", l.seq)
	}
	se := ports.StoredEvent{Seq: l.seq, Subject: subject, Stored: e.Time, Event: e, Err: rejected}
	l.history[subject] = append(l.history[subject], se)
	if rejected != nil {
		l.rejected[l.seq] = true
		v := l.versions[subject]
		v.Seq = l.seq
		l.versions[subject] = v
	}
	return se
}

// fold applies an accepted event to the read model (under mu), with the
// domain's functions, as the projection's fold does.
func (l *Ledger) fold(e domain.Event) error {
	switch e.Type {
	case domain.EventEmailClaimed:
		c, err := domain.DecodePayload[domain.EmailClaimed](e)
		if err != nil {
			return err
		}
		if _, taken := l.claims[c.EmailHash]; !taken {
			l.claims[c.EmailHash] = e.UserID
		}
	case domain.EventUserRegistered:
		p, err := domain.DecodePayload[domain.UserRegistered](e)
		if err != nil {
			return err
		}
		if owner, taken := l.emails[p.Hash()]; taken && owner != e.UserID {
			return fmt.Errorf("handlerstest: event %s: email already belongs to another user", e.ID)
		}
		l.emails[p.Hash()], l.users[e.UserID] = e.UserID, user{emailHash: p.Hash(), passwordHash: p.PasswordHash}
	case domain.EventUserErased:
		u, ok := l.users[e.UserID]
		if !ok {
			return fmt.Errorf("handlerstest: event %s: erasure of an unknown user", e.ID)
		}
		for _, s := range l.sessions[e.UserID] {
			if err := s.Apply(e); err != nil {
				return err
			}
		}
		if l.emails[u.emailHash] == e.UserID {
			delete(l.emails, u.emailHash)
		}
		if l.claims[u.emailHash] == e.UserID {
			delete(l.claims, u.emailHash)
		}
		u.erased, u.passwordHash = true, ""
		l.users[e.UserID] = u
	case domain.EventSessionStarted:
		s, err := domain.SessionFromEvent(e)
		if err != nil {
			return err
		}
		if _, dup := l.owners[s.ID()]; dup {
			return nil // already applied under another message
		}
		if l.sessions[e.UserID] == nil {
			l.sessions[e.UserID] = map[string]*domain.Session{}
		}
		l.sessions[e.UserID][s.ID()], l.owners[s.ID()] = s, e.UserID
		return l.foldFailures(e) // a session start clears them
	case domain.EventLoginFailed, domain.EventLoginThrottled:
		if e.UserID == "" {
			return nil // an unknown email: for the audit trail only
		}
		return l.foldFailures(e)
	case domain.EventAPIKeyCreated, domain.EventAPIKeyRevoked, domain.EventAPIKeyUsed:
		return l.foldAPIKey(e)
	case domain.EventMFAFailed:
		return l.foldFailures(e)
	case domain.EventMFAEnrolmentStarted, domain.EventMFAEnrolled, domain.EventMFADisabled, domain.EventMFAChallenged,
		domain.EventMFAVerified, domain.EventRecoveryCodeUsed:
		m, err := l.mfa[e.UserID].Apply(e)
		if err != nil {
			return err
		}
		l.mfa[e.UserID] = m
	default:
		for _, s := range l.sessions[e.UserID] {
			if err := s.Apply(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// foldAPIKey folds the personal API key events as the projection does.
func (l *Ledger) foldAPIKey(e domain.Event) error {
	if l.keys[e.UserID] == nil {
		l.keys[e.UserID] = map[string]domain.APIKey{}
	}
	switch e.Type {
	case domain.EventAPIKeyCreated:
		k, err := domain.APIKeyFromEvent(e)
		if err != nil {
			return err
		}
		l.keys[e.UserID][k.ID] = k
	case domain.EventAPIKeyRevoked:
		p, err := domain.DecodePayload[domain.APIKeyRevoked](e)
		if err != nil {
			return err
		}
		delete(l.keys[e.UserID], p.KeyID)
	case domain.EventAPIKeyUsed:
		p, err := domain.DecodePayload[domain.APIKeyUsed](e)
		if err != nil {
			return err
		}
		if k, ok := l.keys[e.UserID][p.KeyID]; ok {
			l.keys[e.UserID][p.KeyID] = k.WithUse(e.Time)
		}
	}
	return nil
}

// UserAPIKeys are a user's personal API keys that are not revoked, in the
// domain's order, as the projection lists them.
func (l *Ledger) UserAPIKeys(userID string) ([]domain.APIKey, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return domain.NewUser(userID, "", "", nil).WithAPIKeys(l.apiKeys(userID)).APIKeys(), nil
}

func (l *Ledger) apiKeys(userID string) []domain.APIKey {
	out := make([]domain.APIKey, 0, len(l.keys[userID]))
	for _, k := range l.keys[userID] {
		out = append(out, k)
	}
	return out
}

// foldFailures folds an event into its user's recent failed logins.
func (l *Ledger) foldFailures(e domain.Event) error {
	f, err := l.failures[e.UserID].Apply(e)
	if err != nil {
		return err
	}
	if f.IsZero() {
		delete(l.failures, e.UserID)
	} else {
		l.failures[e.UserID] = f
	}
	return nil
}

// --- The read side -------------------------------------------------------

// LoadUser is the user (nil if it is not registered) with every session it
// has and its failed logins, and its history's version.
func (l *Ledger) LoadUser(userID string, _ ...string) (*domain.User, ports.Version, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.versions[userSubject(userID)]
	u, ok := l.users[userID]
	if !ok {
		return nil, v, nil
	}
	ss := make([]*domain.Session, 0, len(l.sessions[userID]))
	for _, s := range l.sessions[userID] {
		ss = append(ss, copySession(s))
	}
	return domain.NewUser(userID, u.emailHash, u.passwordHash, ss).WithFailures(l.failures[userID]).WithAPIKeys(l.apiKeys(userID)).WithMFA(l.mfa[userID]).WithErased(u.erased), v, nil
}

// WaitFor returns at once: every append is applied when it returns.
func (l *Ledger) WaitFor(context.Context, uint64) error { return nil }

// Accepted reports ports.ErrRejected for a message RejectNext made land
// rejected.
func (l *Ledger) Accepted(_ context.Context, seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rejected[seq] {
		return fmt.Errorf("%w: seq %d", ports.ErrRejected, seq)
	}
	return nil
}

// Credentials is the user and password hash registered for a normalized
// email, or domain.ErrUserNotFound.
func (l *Ledger) Credentials(email string) (string, string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	userID, ok := l.emails[domain.EmailHash(email)]
	if !ok {
		return "", "", domain.ErrUserNotFound
	}
	return userID, l.users[userID].passwordHash, nil
}

// ClaimedUser is the user of an email's first claim, or
// domain.ErrUserNotFound.
func (l *Ledger) ClaimedUser(emailHash string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if userID, ok := l.claims[emailHash]; ok {
		return userID, nil
	}
	return "", domain.ErrUserNotFound
}

// LoginFailures is a user's recent failed logins, folded from its history.
func (l *Ledger) LoginFailures(userID string) (domain.LoginFailures, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures[userID], nil
}

// Session is a session by id, or domain.ErrSessionNotFound.
func (l *Ledger) Session(id string) (*domain.Session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[l.owners[id]][id]; ok {
		return copySession(s), nil
	}
	return nil, domain.ErrSessionNotFound
}

// UserOfSession is the user a session belongs to, or
// domain.ErrSessionNotFound.
func (l *Ledger) UserOfSession(_ context.Context, sessionID string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if userID, ok := l.owners[sessionID]; ok {
		return userID, nil
	}
	return "", domain.ErrSessionNotFound
}

// UserSessions pages a user's sessions newest first (by start time, then
// id), as the projection does: those after `after`, at most limit of those
// keep accepts, and whether keep accepts another after the page. liveOnly
// changes nothing: there is no hot index here, and keep decides.
func (l *Ledger) UserSessions(userID string, _ bool, after *ports.SessionPosition, limit int, keep func(*domain.Session) bool) ([]*domain.Session, bool, error) {
	l.mu.Lock()
	all := make([]*domain.Session, 0, len(l.sessions[userID]))
	for _, s := range l.sessions[userID] {
		all = append(all, copySession(s))
	}
	l.mu.Unlock()
	slices.SortFunc(all, func(a, b *domain.Session) int { return compare(position(a), position(b)) })
	var page []*domain.Session
	for _, s := range all {
		if after != nil && compare(position(s), *after) <= 0 {
			continue
		}
		if keep != nil && !keep(s) {
			continue
		}
		if len(page) == limit {
			return page, true, nil
		}
		page = append(page, s)
	}
	return page, false, nil
}

func position(s *domain.Session) ports.SessionPosition {
	return ports.SessionPosition{StartedAt: s.StartedAt(), SessionID: s.ID()}
}

// compare orders positions as a session list runs: the later start first,
// then the smaller id.
func compare(a, b ports.SessionPosition) int {
	if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
		return c
	}
	switch {
	case a.SessionID < b.SessionID:
		return -1
	case a.SessionID > b.SessionID:
		return 1
	}
	return 0
}

// copySession is a session the caller may fold into without touching the
// ledger's.
func copySession(s *domain.Session) *domain.Session {
	return domain.SessionFromSnapshot(s.Snapshot())
}

// --- A password hasher -------------------------------------------------------

// Hasher "hashes" passwords in the clear ("plain:" and the password) and
// counts what it is asked to do. It is safe for concurrent use.
type Hasher struct {
	Hashes, Verifies, Burns atomic.Int64
}

func (h *Hasher) Hash(pw string) (string, error) {
	h.Hashes.Add(1)
	return "plain:" + pw, nil
}

func (h *Hasher) Verify(pw, hash string) (bool, error) {
	h.Verifies.Add(1)
	return hash == "plain:"+pw, nil
}

func (h *Hasher) Burn(string) error {
	h.Burns.Add(1)
	return nil
}
