package httpapi

import (
	"context"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/ports"
	"github.com/sessionledger/ledger/handlers/query"
)

// fakeLedger is an in-memory stand-in for the log and the projection, so
// that the whole API can be served without NATS or Pebble. It folds events
// with the domain's own functions, as the projection does.
type fakeLedger struct {
	mu       sync.Mutex
	seq      uint64
	versions map[string]ports.Version              // user id -> version
	emails   map[string]string                     // normalized email -> user id
	hashes   map[string]string                     // user id -> password hash
	sessions map[string]map[string]*domain.Session // user id -> session id -> session
	owners   map[string]string                     // session id -> user id
}

func newFakeLedger() *fakeLedger {
	return &fakeLedger{versions: map[string]ports.Version{}, emails: map[string]string{}, hashes: map[string]string{},
		sessions: map[string]map[string]*domain.Session{}, owners: map[string]string{}}
}

func (f *fakeLedger) LoadUser(userID string, _ ...string) (*domain.User, ports.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hash, ok := f.hashes[userID]
	if !ok {
		return nil, f.versions[userID], nil
	}
	var ss []*domain.Session
	for _, s := range f.sessions[userID] {
		ss = append(ss, domain.SessionFromSnapshot(s.Snapshot()))
	}
	email := ""
	for e, u := range f.emails {
		if u == userID {
			email = e
		}
	}
	return domain.NewUser(userID, email, hash, ss), f.versions[userID], nil
}

func (f *fakeLedger) WaitFor(context.Context, uint64) error  { return nil }
func (f *fakeLedger) Accepted(context.Context, uint64) error { return nil }

func (f *fakeLedger) AppendUser(_ context.Context, userID string, v ports.Version, events ...domain.Event) (ports.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.versions[userID].Seq != v.Seq {
		return ports.Version{}, ports.ErrConflict
	}
	for _, e := range events {
		if err := f.fold(e); err != nil {
			return ports.Version{}, err
		}
		f.seq++
		v = ports.Version{Seq: f.seq, Time: e.Time}
	}
	f.versions[userID] = v
	return v, nil
}

func (f *fakeLedger) fold(e domain.Event) error {
	switch e.Type {
	case domain.EventUserRegistered:
		p, err := domain.DecodePayload[domain.UserRegistered](e)
		if err != nil {
			return err
		}
		f.emails[p.Email], f.hashes[e.UserID] = e.UserID, p.PasswordHash
	case domain.EventSessionStarted:
		s, err := domain.SessionFromEvent(e)
		if err != nil {
			return err
		}
		if f.sessions[e.UserID] == nil {
			f.sessions[e.UserID] = map[string]*domain.Session{}
		}
		f.sessions[e.UserID][s.ID()], f.owners[s.ID()] = s, e.UserID
	default:
		for _, s := range f.sessions[e.UserID] {
			if err := s.Apply(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *fakeLedger) AppendEmailClaim(context.Context, string, ports.Version, domain.Event) (ports.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	return ports.Version{Seq: f.seq}, nil
}

func (f *fakeLedger) RecordFacts(_ context.Context, facts []ports.Fact) (int, error) {
	return len(facts), nil
}

func (f *fakeLedger) UserVersion(_ context.Context, userID string) (ports.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.versions[userID], nil
}

func (f *fakeLedger) EmailVersion(context.Context, string) (ports.Version, error) {
	return ports.Version{}, nil
}

func (f *fakeLedger) Credentials(email string) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.emails[email]; ok {
		return u, f.hashes[u], nil
	}
	return "", "", domain.ErrUserNotFound
}

func (f *fakeLedger) ClaimedUser(string) (string, error) { return "", domain.ErrUserNotFound }

// LoginFailures: the fake keeps none, so it never throttles an account.
func (f *fakeLedger) LoginFailures(string) (domain.LoginFailures, error) {
	return domain.LoginFailures{}, nil
}

func (f *fakeLedger) Session(id string) (*domain.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.sessions[f.owners[id]][id]; ok {
		return domain.SessionFromSnapshot(s.Snapshot()), nil
	}
	return nil, domain.ErrSessionNotFound
}

// UserSessions pages the user's sessions newest first (by start, then
// id), as the projection does; liveOnly is left to keep here.
func (f *fakeLedger) UserSessions(userID string, _ bool, after *ports.SessionPosition, limit int, keep func(*domain.Session) bool) ([]*domain.Session, bool, error) {
	f.mu.Lock()
	var all []*domain.Session
	for _, s := range f.sessions[userID] {
		all = append(all, domain.SessionFromSnapshot(s.Snapshot()))
	}
	f.mu.Unlock()
	newer := func(a *domain.Session, startedAt time.Time, id string) bool {
		return a.StartedAt().After(startedAt) || a.StartedAt().Equal(startedAt) && a.ID() < id
	}
	sort.Slice(all, func(i, j int) bool { return newer(all[i], all[j].StartedAt(), all[j].ID()) })
	var page []*domain.Session
	for _, s := range all {
		if after != nil && (s.ID() == after.SessionID || newer(s, after.StartedAt, after.SessionID)) {
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

func (f *fakeLedger) UserOfSession(_ context.Context, sessionID string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.owners[sessionID]; ok {
		return u, nil
	}
	return "", domain.ErrSessionNotFound
}

func (f *fakeLedger) UserHistory(_ context.Context, userID string) ([]ports.StoredEvent, error) {
	return nil, nil
}

func (f *fakeLedger) EmailHistory(context.Context, string) (string, []ports.StoredEvent, error) {
	return "", nil, ports.ErrNotInLog
}

// fakeHasher "hashes" in the clear: the API does not care how.
type fakeHasher struct{}

func (fakeHasher) Hash(pw string) (string, error)       { return "h:" + pw, nil }
func (fakeHasher) Verify(pw, hash string) (bool, error) { return hash == "h:"+pw, nil }
func (fakeHasher) Burn(string) error                    { return nil }

// seededRand is deterministic token randomness, so the token of the
// fixture's first signup is the same in every fuzzing process.
type seededRand struct{ r *rand.ChaCha8 }

func (s seededRand) Read(p []byte) (int, error) { return s.r.Read(p) }

// fakeAPI is the whole API over a fakeLedger, with the (bootstrap) admin
// key "admin".
func fakeAPI(now func() time.Time) (*API, error) {
	f := newFakeLedger()
	users, err := command.NewUsers(f, f, now)
	if err != nil {
		return nil, err
	}
	unknown, err := command.NewUnknownEmails(domain.DefaultLoginThrottle(), 1000, f, now)
	if err != nil {
		return nil, err
	}
	var n int
	var idMu sync.Mutex
	commands, err := command.New(command.Deps{
		Users: users, Log: f, Hasher: fakeHasher{}, Creds: f, Policy: domain.DefaultPolicy(), Now: now,
		Throttle: domain.DefaultLoginThrottle(), Unknown: unknown,
		NewID: func() string {
			idMu.Lock()
			defer idMu.Unlock()
			n++
			return "user-" + string(rune('a'+n%26)) + time.Duration(n).String()
		},
		Rand: seededRand{rand.NewChaCha8([32]byte{1})},
	})
	if err != nil {
		return nil, err
	}
	queries, err := query.New(query.Deps{Sessions: f, Log: f, Now: now})
	if err != nil {
		return nil, err
	}
	reg := &fakeRegistry{users: f, version: map[string]ports.Version{}}
	var keyIDs atomic.Int64
	admin, err := command.NewAdmin(command.AdminDeps{Users: users, Registry: reg, Log: fakeRegistryLog{reg}, Owners: f, Now: now,
		NewID: func() string { return "key-" + strconv.FormatInt(keyIDs.Add(1), 10) }, Rand: seededRand{rand.NewChaCha8([32]byte{2})}})
	if err != nil {
		return nil, err
	}
	access, err := query.NewAccess(reg)
	if err != nil {
		return nil, err
	}
	key := HashAdminKey("admin")
	return New(Config{Commands: commands, Queries: queries, Admin: admin, Access: access, AdminKey: &key,
		Digests: func() (Digests, error) { return Digests{}, nil }}), nil
}

// fakeRegistry is the in-memory registries of service keys and apps, for
// the admin API over a fakeLedger.
type fakeRegistry struct {
	mu      sync.Mutex
	seq     uint64
	creds   []domain.Credential
	users   *fakeLedger
	version map[string]ports.Version
}

func (f *fakeRegistry) RegistryVersion(registry string) (ports.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.version[registry], nil
}

func (f *fakeRegistry) Accepted(context.Context, uint64) error { return nil }

func (f *fakeRegistry) Credential(kind, id string) (domain.Credential, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.creds {
		if c.Kind == kind && c.ID == id {
			return c, true, nil
		}
	}
	return domain.Credential{}, false, nil
}

func (f *fakeRegistry) ActiveKey(h domain.KeyHash) (domain.Credential, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.creds {
		if c.KeyHash == h.String() && !c.Revoked() {
			return c, true, nil
		}
	}
	return domain.Credential{}, false, nil
}

func (f *fakeRegistry) ListCredentials(kind string) ([]domain.Credential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []domain.Credential
	for _, c := range f.creds {
		if c.Kind == kind {
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeRegistry) UserExists(userID string) (bool, error) {
	f.users.mu.Lock()
	defer f.users.mu.Unlock()
	_, ok := f.users.hashes[userID]
	return ok, nil
}

// fakeRegistryLog appends to a fakeRegistry (its RegistryVersion takes a
// context, as the log's does).
type fakeRegistryLog struct{ *fakeRegistry }

func (f fakeRegistryLog) RegistryVersion(_ context.Context, registry string) (ports.Version, error) {
	return f.fakeRegistry.RegistryVersion(registry)
}

func (f fakeRegistryLog) AppendRegistry(_ context.Context, registry string, v ports.Version, events ...domain.Event) (ports.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.version[registry].Seq != v.Seq {
		return ports.Version{}, ports.ErrConflict
	}
	for _, e := range events {
		switch e.Type {
		case domain.EventServiceKeyCreated, domain.EventAppRegistered:
			c, err := domain.CredentialFromEvent(e)
			if err != nil {
				return ports.Version{}, err
			}
			f.creds = append(f.creds, c)
		default:
			id, by, err := domain.RevokedCredential(e)
			if err != nil {
				return ports.Version{}, err
			}
			for i := range f.creds {
				if f.creds[i].ID == id {
					f.creds[i].RevokedAt, f.creds[i].RevokedBy = e.Time, by
				}
			}
		}
		f.seq++
		v = ports.Version{Seq: f.seq, Time: e.Time}
	}
	f.version[registry] = v
	return v, nil
}
