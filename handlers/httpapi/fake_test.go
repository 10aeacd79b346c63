package httpapi

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/handlerstest"
	"github.com/sessionledger/ledger/handlers/query"
)

// seededRand is deterministic token randomness, so the token of the
// fixture's first signup is the same in every fuzzing process.
type seededRand struct{ r *rand.ChaCha8 }

func (s seededRand) Read(p []byte) (int, error) { return s.r.Read(p) }

// fakeAPI is the whole API over an in-memory ledger, with the admin key
// "admin".
func fakeAPI(now func() time.Time) (*API, error) {
	f := handlerstest.NewLedger()
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
	queries, err := query.New(query.Deps{Sessions: f, Log: f, Now: now, APIKeys: f})
	if err != nil {
		return nil, err
	}
	key := HashAdminKey("admin")
	return New(Config{Commands: commands, Queries: queries, AdminKey: &key, Digests: func() (Digests, error) { return Digests{}, nil }}), nil
}
