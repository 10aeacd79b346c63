package httpapi

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/handlerstest"
	"github.com/sessionledger/ledger/handlers/ports"
	"github.com/sessionledger/ledger/handlers/query"
)

// seededRand is deterministic token randomness, so the token of the
// fixture's first signup is the same in every fuzzing process.
type seededRand struct{ r *rand.ChaCha8 }

func (s seededRand) Read(p []byte) (int, error) { return s.r.Read(p) }

// fakeAPI is the whole API over the in-memory ledger, with the (bootstrap) admin
// key "admin".
func fakeAPI(now func() time.Time) (*API, error) {
	f := handlerstest.NewLedger()
	secrets := handlerstest.NewSecrets()
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
		Users: users, Log: f, Hasher: &handlerstest.Hasher{}, Creds: f, Policy: domain.DefaultPolicy(), Now: now,
		Throttle: domain.DefaultLoginThrottle(), Unknown: unknown, Secrets: secrets,
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
	queries, err := query.New(query.Deps{Sessions: f, Log: f, Now: now, APIKeys: f})
	if err != nil {
		return nil, err
	}
	reg := &fakeRegistry{users: f, version: map[string]ports.Version{}}
	var keyIDs atomic.Int64
	admin, err := command.NewAdmin(command.AdminDeps{Users: users, Registry: reg, Log: fakeRegistryLog{reg}, Owners: f, Now: now, Secrets: secrets,
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
// the admin API over the in-memory ledger.
type fakeRegistry struct {
	mu      sync.Mutex
	seq     uint64
	creds   []domain.Credential
	users   *handlerstest.Ledger
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
	u, _, err := f.users.LoadUser(userID)
	return u != nil, err
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
