package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/eventstore/natsauth"
	"github.com/sessionledger/ledger/handlers/command"
)

// benchPassword is every seeded user's password; the login figure logs in
// with it.
const benchPassword = "bench-password-1234"

// benchPasswordHash is computed once and shared by all seeded users: seeding
// a million users must not take a million argon2id runs.
func benchPasswordHash() (string, error) {
	return argon2id.CreateHash(benchPassword, &command.OWASPParams)
}

// signingKeyFile is where `ledger serve` and `ledger rebuild` look for the
// key ring of a data dir (cmd/ledger: <data-dir>/signing.key).
const signingKeyFile = "signing.key"

// staticKey is the KeySource of the bench's stores: one key, in force from
// the introduction on (the bench never rotates).
type staticKey struct{ k domain.SigningKey }

func (s staticKey) SigningKey() (domain.SigningKey, error) { return s.k, nil }

// startNATS starts the embedded server on natsDir the way `ledger serve`
// does (openLog in cmd/ledger): admitting only the nkey identities kept in
// natsDir (writer.nk, reader.nk, created if missing), and connects to it as
// the writer. The identities a seeding process creates are the ones the
// server finds later.
func startNATS(natsDir, name string, syncAlways bool) (*embedded.Server, *nats.Conn, error) {
	ids, err := natsauth.LoadOrCreate(natsDir)
	if err != nil {
		return nil, nil, err
	}
	emb, err := embedded.Start(embedded.Config{
		Dir: natsDir, SyncAlways: syncAlways, ServerName: name,
		Users: ids.ServerUsers(eventstore.DefaultStream), Identity: ids.Writer,
	})
	if err != nil {
		return nil, nil, err
	}
	nc, err := emb.Connect(name)
	if err != nil {
		emb.Shutdown()
		return nil, nil, err
	}
	return emb, nc, nil
}

// loadKey reads a key file as the ledger does and returns its ring and the
// key in force (the ring's only, newest key).
func loadKey(path string) (*domain.Keyring, domain.SigningKey, error) {
	ring, err := keyfile.LoadRing(path)
	if err != nil {
		return nil, domain.SigningKey{}, err
	}
	k, ok := ring.Newest()
	if !ok {
		return nil, domain.SigningKey{}, fmt.Errorf("%s holds no key", path)
	}
	return ring, k, nil
}

// dataset is a data dir holding a seeded stream and its signing key (no
// projection yet: the server builds it while catching up).
type dataset struct {
	dir       string
	keyFile   string // <dir>/signing.key
	sessions  int
	users     int
	events    int
	poolFile  string // raw tokens wrk rotates over, one a line
	poolSize  int
	touchFile string   // the first touchPool tokens of the pool
	emails    []string // some seeded users' emails, for logins
	seededAt  time.Time
}

// seedWriters is how many users are appended concurrently.
const seedWriters = 16

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// seedDataset appends sessions live sessions (perUser per user, each user
// registered first) to a fresh stream in dir/nats through eventstore.Store,
// sealed into each user's hash chain and signed as the command handlers
// would, and writes a uniform random sample of pool raw tokens to a file.
// The ledger it leaves is one `ledger serve --data-dir dir` accepts: a new
// key in dir/signing.key, introduced by the stream's first event, signs
// every later one. Sessions started two hours ago, with "keep me logged
// in", so they are live and their first validate with touch records a use.
func seedDataset(ctx context.Context, dir string, sessions, perUser, pool, touchPool int, pwHash string) (*dataset, error) {
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil { // the ledger refuses a data dir open to others
		return nil, err
	}
	// The key is written first and read back as the server will read it.
	keyPath := filepath.Join(dir, signingKeyFile)
	if _, err := keyfile.Create(keyPath); err != nil {
		return nil, err
	}
	_, key, err := loadKey(keyPath)
	if err != nil {
		return nil, err
	}
	// Seeding is set-up, not a figure: no fsync per message. A clean
	// shutdown flushes everything.
	emb, nc, err := startNATS(filepath.Join(dir, "nats"), "bench-seed", false)
	if err != nil {
		return nil, err
	}
	defer emb.Shutdown()
	defer nc.Close()
	store, err := eventstore.Open(ctx, nc, eventstore.Config{Create: true, Keys: staticKey{key}})
	if err != nil {
		return nil, err
	}

	ds := &dataset{dir: dir, keyFile: keyPath, sessions: sessions, poolFile: filepath.Join(dir, "tokens.txt"), touchFile: filepath.Join(dir, "touch-tokens.txt")}
	policy := domain.DefaultPolicy()
	base := time.Now().Add(-2 * time.Hour)
	// The stream's first event puts the key in force; the projection
	// rejects every event before it.
	if _, err := store.Introduce(ctx, key, newID(), base.Add(-2*time.Minute)); err != nil {
		return nil, fmt.Errorf("introduce signing key: %w", err)
	}
	rng := mrand.New(mrand.NewPCG(uint64(sessions), 42))
	sample := make([]string, 0, pool)

	// The generator draws tokens and decides the events; appenders publish
	// each user's events with Store.Append at version zero, as signup does,
	// many users at a time.
	type bundle struct {
		subject string
		events  []domain.Event
	}
	bundles := make(chan bundle, 256)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range seedWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range bundles {
				if _, err := store.Append(ctx, b.subject, eventstore.Version{}, b.events...); err != nil {
					select {
					case errc <- err:
					default:
					}
					for range bundles { // drain so the generator finishes
					}
					return
				}
			}
		}()
	}

	n := 0
	var genErr error
	for u := 0; n < sessions; u++ {
		if ctx.Err() != nil {
			genErr = ctx.Err()
			break
		}
		uid := newID()
		email := fmt.Sprintf("bench-%07d@example.com", u)
		reg, err := domain.Register(uid, email, "", pwHash, base.Add(-time.Minute))
		if err != nil {
			genErr = err
			break
		}
		reg.ID = newID()
		events := make([]domain.Event, 0, perUser+1)
		events = append(events, reg)
		user := domain.NewUser(uid, email, pwHash, nil)
		for k := 0; k < perUser && n < sessions; k++ {
			raw, sid, hash, err := domain.NewToken(rand.Reader)
			if err != nil {
				genErr = err
				break
			}
			e := user.StartSession(sid, hash, "password", true, false, base.Add(time.Duration(n)*time.Microsecond), policy)
			e.ID = newID()
			events = append(events, e)
			// Reservoir sampling: a uniform sample over the whole set.
			if len(sample) < pool {
				sample = append(sample, raw)
			} else if j := rng.IntN(n + 1); j < pool {
				sample[j] = raw
			}
			n++
		}
		ds.users++
		if len(ds.emails) < 20_000 {
			ds.emails = append(ds.emails, email)
		}
		bundles <- bundle{subject: eventstore.UserSubject(uid), events: events}
		if n%200_000 < perUser && n >= 200_000 {
			logf("seeding %s: %d/%d sessions", filepath.Base(dir), n, sessions)
		}
	}
	close(bundles)
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	if genErr != nil {
		return nil, genErr
	}
	last, err := store.LastSeq(ctx)
	if err != nil {
		return nil, err
	}
	ds.events = int(last)
	rng.Shuffle(len(sample), func(i, j int) { sample[i], sample[j] = sample[j], sample[i] })
	if err := writeLines(ds.poolFile, sample); err != nil {
		return nil, err
	}
	ds.poolSize = len(sample)
	if err := writeLines(ds.touchFile, sample[:min(touchPool, len(sample))]); err != nil {
		return nil, err
	}
	ds.seededAt = time.Now()
	if err := ds.save(); err != nil {
		return nil, err
	}
	el := time.Since(start)
	logf("seeded %s: %d sessions of %d users, %d events in %s (%.0f events/s)", filepath.Base(dir), n, ds.users, ds.events,
		el.Round(time.Millisecond), float64(ds.events)/el.Seconds())
	return ds, nil
}

func writeLines(path string, lines []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, l := range lines {
		w.WriteString(l)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// datasetFile is where a seeded data set is described, for --reuse.
const datasetFile = "dataset.json"

// datasetJSON is what datasetFile holds (paths relative to the data dir).
type datasetJSON struct {
	Sessions  int       `json:"sessions"`
	Users     int       `json:"users"`
	Events    int       `json:"events"`
	PoolSize  int       `json:"pool_size"`
	Emails    []string  `json:"emails"`
	SeededAt  time.Time `json:"seeded_at"`
	PoolFile  string    `json:"pool_file"`
	TouchFile string    `json:"touch_file"`
}

func (ds *dataset) save() error {
	b, err := json.Marshal(datasetJSON{Sessions: ds.sessions, Users: ds.users, Events: ds.events, PoolSize: ds.poolSize,
		Emails: ds.emails, SeededAt: ds.seededAt, PoolFile: filepath.Base(ds.poolFile), TouchFile: filepath.Base(ds.touchFile)})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(ds.dir, datasetFile), b, 0o600)
}

// loadDataset reads back a data set a --keep run left in dir.
func loadDataset(dir string) (*dataset, error) {
	b, err := os.ReadFile(filepath.Join(dir, datasetFile))
	if err != nil {
		return nil, err
	}
	var j datasetJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, datasetFile), err)
	}
	return &dataset{dir: dir, keyFile: filepath.Join(dir, signingKeyFile), sessions: j.Sessions, users: j.Users, events: j.Events,
		poolFile: filepath.Join(dir, j.PoolFile), poolSize: j.PoolSize, touchFile: filepath.Join(dir, j.TouchFile),
		emails: j.Emails, seededAt: j.SeededAt}, nil
}
