package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"crypto/rand"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
)

// The CLI side of service keys and roles: the same events the admin API
// appends, written straight to the log (a stopped server's data dir, or a
// running ledger through --nats-url with the writer identity and the
// signing key ring), decided on the subject's history as read from the
// stream, so no projection or HTTP server is needed. This is how the first
// admin is made without any key (ledger users set-role), and how service
// keys are managed when the bootstrap key is not at hand.

// cliOperator names the CLI in the events it appends ("operator:cli").
var cliOperator = domain.Principal{Operator: "cli"}

// withWritableLog opens the log for writing, as `keys rotate` does, and runs fn
// with the signing key ring.
func withWritableLog(f logFlags, o outputFlags, fn func(ctx context.Context, store *eventstore.Store, ring *domain.Keyring) error) error {
	return withWritableLedger(f, o, func(ctx context.Context, ll *ledgerLog, ring *domain.Keyring) error { return fn(ctx, ll.store, ring) })
}

// withWritableLedger is withWritableLog with the open log itself (its NATS
// connection reaches the data keys too).
func withWritableLedger(f logFlags, o outputFlags, fn func(ctx context.Context, ll *ledgerLog, ring *domain.Keyring) error) error {
	ctx, stop := signalContext()
	defer stop()
	cfg := f.config()
	ring, err := keyfile.LoadRing(signingKeyPath(cfg))
	if err != nil {
		return err
	}
	ll, err := openLog(ctx, cfg, o.logger(), false)
	if err != nil {
		return err
	}
	defer ll.close()
	if err := ll.openStore(ctx, cfg, false); err != nil {
		return err
	}
	ll.store.SetVerifier(ring)
	return fn(ctx, ll, ring)
}

// decideRetrying runs store.Decide, again after a conflict with another
// writer.
func decideRetrying(ctx context.Context, store *eventstore.Store, ring *domain.Keyring, subject string, decide func([]domain.Event, time.Time) ([]domain.Event, error)) (eventstore.Version, error) {
	for attempt := 1; ; attempt++ {
		v, err := store.Decide(ctx, ring, subject, decide)
		if !errors.Is(err, eventstore.ErrConflict) || attempt == 10 {
			return v, err
		}
	}
}

// foldCredentials is a registry's credentials from its authentic events,
// oldest first.
func foldCredentials(events []domain.Event) ([]domain.Credential, error) {
	var out []domain.Credential
	index := map[string]int{}
	for _, e := range events {
		switch e.Type {
		case domain.EventServiceKeyCreated, domain.EventAppRegistered:
			c, err := domain.CredentialFromEvent(e)
			if err != nil {
				return nil, err
			}
			if _, dup := index[c.ID]; !dup {
				index[c.ID] = len(out)
				out = append(out, c)
			}
		case domain.EventServiceKeyRevoked, domain.EventAppRevoked:
			id, by, err := domain.RevokedCredential(e)
			if err != nil {
				return nil, err
			}
			if i, ok := index[id]; ok && !out[i].Revoked() {
				out[i].RevokedAt, out[i].RevokedBy = e.Time, by
			}
		}
	}
	return out, nil
}

var serviceKeysSubject = eventstore.RegistrySubject(domain.ServiceKeysRegistry)

type keysCreateCmd struct {
	logFlags
	outputFlags
	Name   string   `name:"name" required:"" help:"What the key is for (shown in lists and in the log)."`
	Scopes []string `name:"scope" required:"" sep:"," help:"Scopes: validate, introspect, feed, audit, admin (repeat, or comma-separated)."`
}

func (c *keysCreateCmd) Run() error { return c.create(os.Stdout, os.Stderr) }

func (c *keysCreateCmd) create(out, status io.Writer) error {
	scopes, err := domain.ParseScopes(c.Scopes)
	if err != nil {
		return err
	}
	raw, hash, err := domain.NewServiceKey(rand.Reader)
	if err != nil {
		return err
	}
	id := newID()
	return withWritableLog(c.logFlags, c.outputFlags, func(ctx context.Context, store *eventstore.Store, ring *domain.Keyring) error {
		v, err := decideRetrying(ctx, store, ring, serviceKeysSubject, func(_ []domain.Event, at time.Time) ([]domain.Event, error) {
			e, err := domain.CreateServiceKey(id, c.Name, scopes, hash, cliOperator, at)
			return []domain.Event{e}, err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(status, "created service key %s (%s; scopes %s) at sequence %d; it is printed once, on stdout, and stored nowhere\n",
			id, c.Name, strings.Join(scopeNames(scopes), ","), v.Seq)
		fmt.Fprintln(out, raw)
		return nil
	})
}

func scopeNames(s []domain.Scope) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = string(x)
	}
	return out
}

type keysListCmd struct {
	auditFlags
}

func (c *keysListCmd) Run() error {
	return c.run(func(ctx context.Context, store *eventstore.Store) error {
		return listServiceKeys(ctx, store, c.JSON, os.Stdout)
	})
}

func listServiceKeys(ctx context.Context, store *eventstore.Store, asJSON bool, out io.Writer) error {
	history, err := store.CheckedHistory(ctx, serviceKeysSubject)
	if err != nil {
		return err
	}
	var events []domain.Event
	for _, se := range history {
		if se.Err == nil {
			events = append(events, se.Event)
		}
	}
	keys, err := foldCredentials(events)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(out)
		for _, k := range keys {
			if err := enc.Encode(k); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tSCOPES\tCREATED\tBY\tSTATUS")
	for _, k := range keys {
		status := "active"
		if k.Revoked() {
			status = "revoked " + k.RevokedAt.Format(time.RFC3339) + " by " + k.RevokedBy
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, strings.Join(scopeNames(k.Scopes), ","), k.CreatedAt.Format(time.RFC3339), k.CreatedBy, status)
	}
	return w.Flush()
}

type keysRevokeCmd struct {
	logFlags
	outputFlags
	ID string `arg:"" help:"Id of the service key (from 'ledger keys list')."`
}

func (c *keysRevokeCmd) Run() error { return c.revoke(os.Stdout) }

func (c *keysRevokeCmd) revoke(out io.Writer) error {
	return withWritableLog(c.logFlags, c.outputFlags, func(ctx context.Context, store *eventstore.Store, ring *domain.Keyring) error {
		already := false
		v, err := decideRetrying(ctx, store, ring, serviceKeysSubject, func(history []domain.Event, at time.Time) ([]domain.Event, error) {
			keys, err := foldCredentials(history)
			if err != nil {
				return nil, err
			}
			for _, k := range keys {
				if k.ID == c.ID {
					e, ok := domain.RevokeServiceKey(k, cliOperator, at)
					if !ok {
						already = true
						return nil, nil
					}
					return []domain.Event{e}, nil
				}
			}
			return nil, fmt.Errorf("%w: %s", domain.ErrKeyNotFound, c.ID)
		})
		if err != nil {
			return err
		}
		if already {
			fmt.Fprintf(out, "service key %s was already revoked\n", c.ID)
		} else {
			fmt.Fprintf(out, "revoked service key %s at sequence %d\n", c.ID, v.Seq)
		}
		return nil
	})
}

// usersCmd manages users from the CLI.
type usersCmd struct {
	SetRole usersSetRoleCmd `cmd:"" name:"set-role" help:"Give a user a role (admin, user, guest): a user_role_changed event. This is how the first admin is made."`
	Erase   usersEraseCmd   `cmd:"" name:"erase" help:"Erase a user: a user_erased event (every live session revoked, the email free to sign up again), then the user's data key destroyed, so the sealed email and secrets in the log become unreadable. Again: nothing appended, the key destroyed again."`
}

type usersEraseCmd struct {
	logFlags
	outputFlags
	User string `name:"user" required:"" help:"User id (from signup's user_id, or 'ledger audit history --email')."`
}

func (c *usersEraseCmd) Run() error { return c.erase(os.Stdout) }

func (c *usersEraseCmd) erase(out io.Writer) error {
	return withWritableLedger(c.logFlags, c.outputFlags, func(ctx context.Context, ll *ledgerLog, ring *domain.Keyring) error {
		secrets, err := openSecrets(ctx, ll, c.config(), 0, true, c.logger())
		if err != nil {
			return err
		}
		already, revoked := false, 0
		v, err := decideRetrying(ctx, ll.store, ring, eventstore.UserSubject(c.User), func(history []domain.Event, at time.Time) ([]domain.Event, error) {
			u, err := foldUser(c.User, history)
			if err != nil {
				return nil, err
			}
			e, ok := u.Erase(cliOperator, at)
			already, revoked = !ok, u.LiveSessions(at)
			if !ok {
				return nil, nil
			}
			return []domain.Event{e}, nil
		})
		if err != nil {
			return err
		}
		if err := secrets.Destroy(ctx, c.User); err != nil {
			return fmt.Errorf("user %s is erased in the log, but its data key was not destroyed (run this again to finish): %w", c.User, err)
		}
		if already {
			fmt.Fprintf(out, "user %s was already erased; its data key is destroyed\n", c.User)
		} else {
			fmt.Fprintf(out, "user %s erased at sequence %d (%d live sessions revoked); its data key is destroyed\n", c.User, v.Seq, revoked)
		}
		return nil
	})
}

// foldUser is what the CLI's decisions need of a user, folded from the
// user's authentic events: its sessions, role and erasure.
func foldUser(userID string, history []domain.Event) (*domain.User, error) {
	registered, erased := false, false
	role := domain.RoleUser
	var sessions []*domain.Session
	for _, e := range history {
		switch e.Type {
		case domain.EventUserRegistered:
			registered = true
		case domain.EventUserErased:
			erased = true
		case domain.EventSessionStarted:
			s, err := domain.SessionFromEvent(e)
			if err != nil {
				return nil, err
			}
			sessions = append(sessions, s)
			continue
		}
		for _, s := range sessions {
			if err := s.Apply(e); err != nil {
				return nil, err
			}
		}
		r, err := domain.ApplyRole(role, e)
		if err != nil {
			return nil, err
		}
		role = r
	}
	if !registered {
		return nil, fmt.Errorf("%w: %s", domain.ErrUserNotFound, userID)
	}
	return domain.NewUser(userID, "", "", sessions).WithRole(role).WithErased(erased), nil
}

type usersSetRoleCmd struct {
	logFlags
	outputFlags
	User string `arg:"" help:"User id (from signup's user_id, or 'ledger audit history --email')."`
	Role string `arg:"" enum:"admin,user,guest" help:"admin, user or guest."`
}

func (c *usersSetRoleCmd) Run() error { return c.setRole(os.Stdout) }

func (c *usersSetRoleCmd) setRole(out io.Writer) error {
	role, err := domain.ParseRole(c.Role)
	if err != nil {
		return err
	}
	return withWritableLog(c.logFlags, c.outputFlags, func(ctx context.Context, store *eventstore.Store, ring *domain.Keyring) error {
		var previous domain.Role
		v, err := decideRetrying(ctx, store, ring, eventstore.UserSubject(c.User), func(history []domain.Event, at time.Time) ([]domain.Event, error) {
			registered := false
			current := domain.RoleUser
			for _, e := range history {
				if e.Type == domain.EventUserRegistered {
					registered = true
				}
				r, err := domain.ApplyRole(current, e)
				if err != nil {
					return nil, err
				}
				current = r
			}
			if !registered {
				return nil, fmt.Errorf("%w: %s", domain.ErrUserNotFound, c.User)
			}
			previous = current
			e, ok, err := domain.NewUser(c.User, "", "", nil).WithRole(current).ChangeRole(role, cliOperator, at)
			if err != nil || !ok {
				return nil, err
			}
			return []domain.Event{e}, nil
		})
		if err != nil {
			return err
		}
		if previous == role {
			fmt.Fprintf(out, "user %s already has role %s\n", c.User, role)
		} else {
			fmt.Fprintf(out, "user %s: role %s (was %s) from sequence %d\n", c.User, role, previous, v.Seq)
		}
		return nil
	})
}
