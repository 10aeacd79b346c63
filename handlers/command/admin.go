package command

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// The admin commands: service keys and apps (each a registry with a
// history of its own in the log), users' roles, and revocations by an
// admin. Every one is decided by the domain and names who decided it
// (domain.Principal.By).

type (
	// registryReader reads the registries as the projection folded them.
	registryReader interface {
		RegistryVersion(registry string) (ports.Version, error)
		// Credential is a service key or app by id (kind must match);
		// ok is false if there is none.
		Credential(kind, id string) (domain.Credential, bool, error)
		Accepted(ctx context.Context, seq uint64) error
	}
	registryLog interface {
		AppendRegistry(ctx context.Context, registry string, v ports.Version, events ...domain.Event) (ports.Version, error)
		// RegistryVersion is the registry's version once the read side
		// has checked everything in it.
		RegistryVersion(ctx context.Context, registry string) (ports.Version, error)
	}
	sessionOwner interface {
		UserOfSession(ctx context.Context, sessionID string) (string, error)
	}
)

// AdminDeps are what the admin commands need; all are required except
// Rand (crypto/rand when nil).
type AdminDeps struct {
	Users    *Users
	Registry registryReader
	Log      registryLog
	Owners   sessionOwner
	Now      func() time.Time
	NewID    func() string // key and app ids
	Rand     io.Reader
	// Secrets destroys an erased user's data key.
	Secrets ports.Secrets
}

// AdminHandlers are the admin commands, wired once.
type AdminHandlers struct {
	CreateServiceKey CreateServiceKeyHandler
	RevokeServiceKey RevokeServiceKeyHandler
	RegisterApp      RegisterAppHandler
	RevokeApp        RevokeAppHandler
	SetRole          SetRoleHandler
	RevokeSession    AdminRevokeSessionHandler
	RevokeSessions   AdminRevokeSessionsHandler
	EraseUser        EraseUserHandler
}

// NewAdmin builds the admin commands, refusing missing dependencies.
func NewAdmin(d AdminDeps) (AdminHandlers, error) {
	if d.Users == nil || d.Registry == nil || d.Log == nil || d.Owners == nil || d.Now == nil || d.NewID == nil || d.Secrets == nil {
		return AdminHandlers{}, errors.New("command.NewAdmin: Users, Registry, Log, Owners, Now, NewID and Secrets are required")
	}
	if d.Rand == nil {
		d.Rand = rand.Reader
	}
	return AdminHandlers{
		CreateServiceKey: CreateServiceKeyHandler{d}, RevokeServiceKey: RevokeServiceKeyHandler{d},
		RegisterApp: RegisterAppHandler{d}, RevokeApp: RevokeAppHandler{d},
		SetRole: SetRoleHandler{d}, RevokeSession: AdminRevokeSessionHandler{d}, RevokeSessions: AdminRevokeSessionsHandler{d},
		EraseUser: EraseUserHandler{d},
	}, nil
}

// registryWrite appends what decide returns to a registry at the version
// it was decided on, deciding again after a conflict, and returns the log
// position once this instance has accepted it. The version is read before
// the state decide reads, so a change in between makes the append
// conflict rather than be decided on stale state.
func (d AdminDeps) registryWrite(ctx context.Context, registry string, decide func(at time.Time) ([]domain.Event, error)) (uint64, error) {
	for attempt := 1; ; attempt++ {
		v, err := d.Registry.RegistryVersion(registry)
		if err != nil {
			return 0, err
		}
		events, err := decide(domain.NextEventTime(d.Now(), v.Time))
		if err != nil {
			return 0, err
		}
		if len(events) == 0 {
			return v.Seq, nil
		}
		next, err := d.Log.AppendRegistry(ctx, registry, v, events...)
		if err == nil {
			err = d.Registry.Accepted(ctx, next.Seq)
			if err == nil || !errors.Is(err, ports.ErrRejected) || attempt == 20 {
				return next.Seq, err
			}
			continue
		}
		if !errors.Is(err, ports.ErrConflict) {
			return 0, err
		}
		if attempt == 20 {
			return 0, fmt.Errorf("%s registry: %w", registry, ErrTooMuchContention)
		}
		if _, err := d.Log.RegistryVersion(ctx, registry); err != nil {
			return 0, err
		}
	}
}

// CreatedKey is a new service key or app: Key is the raw key, which exists
// only in this answer.
type CreatedKey struct {
	ID     string
	Name   string
	Scopes []domain.Scope
	Key    string
	Seq    uint64
}

// CreateServiceKeyHandler creates a service key.
type CreateServiceKeyHandler struct{ AdminDeps }

func (h CreateServiceKeyHandler) Handle(ctx context.Context, by domain.Principal, name string, scopes []string) (CreatedKey, error) {
	sc, err := domain.ParseScopes(scopes)
	if err != nil {
		return CreatedKey{}, err
	}
	raw, hash, err := domain.NewServiceKey(h.Rand)
	if err != nil {
		return CreatedKey{}, err
	}
	id := h.NewID()
	seq, err := h.registryWrite(ctx, domain.ServiceKeysRegistry, func(at time.Time) ([]domain.Event, error) {
		e, err := domain.CreateServiceKey(id, name, sc, hash, by, at)
		return []domain.Event{e}, err
	})
	if err != nil {
		return CreatedKey{}, err
	}
	return CreatedKey{ID: id, Name: name, Scopes: sc, Key: raw, Seq: seq}, nil
}

// RevokeServiceKeyHandler revokes a service key; revoking a revoked one
// changes nothing.
type RevokeServiceKeyHandler struct{ AdminDeps }

func (h RevokeServiceKeyHandler) Handle(ctx context.Context, by domain.Principal, id string) (uint64, error) {
	return h.registryWrite(ctx, domain.ServiceKeysRegistry, func(at time.Time) ([]domain.Event, error) {
		c, ok, err := h.Registry.Credential(domain.KindServiceKey, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, domain.ErrKeyNotFound
		}
		e, ok := domain.RevokeServiceKey(c, by, at)
		if !ok {
			return nil, nil
		}
		return []domain.Event{e}, nil
	})
}

// RegisterAppHandler registers an app and draws its key.
type RegisterAppHandler struct{ AdminDeps }

func (h RegisterAppHandler) Handle(ctx context.Context, by domain.Principal, name string) (CreatedKey, error) {
	raw, hash, err := domain.NewAppKey(h.Rand)
	if err != nil {
		return CreatedKey{}, err
	}
	id := h.NewID()
	seq, err := h.registryWrite(ctx, domain.AppsRegistry, func(at time.Time) ([]domain.Event, error) {
		e, err := domain.RegisterApp(id, name, hash, by, at)
		return []domain.Event{e}, err
	})
	if err != nil {
		return CreatedKey{}, err
	}
	return CreatedKey{ID: id, Name: name, Key: raw, Seq: seq}, nil
}

// RevokeAppHandler revokes an app's key.
type RevokeAppHandler struct{ AdminDeps }

func (h RevokeAppHandler) Handle(ctx context.Context, by domain.Principal, id string) (uint64, error) {
	return h.registryWrite(ctx, domain.AppsRegistry, func(at time.Time) ([]domain.Event, error) {
		c, ok, err := h.Registry.Credential(domain.KindApp, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, domain.ErrAppNotFound
		}
		e, ok := domain.RevokeApp(c, by, at)
		if !ok {
			return nil, nil
		}
		return []domain.Event{e}, nil
	})
}

// RoleChange is what SetRole did.
type RoleChange struct {
	Role, Previous domain.Role
	Seq            uint64
}

// SetRoleHandler gives a user a role.
type SetRoleHandler struct{ AdminDeps }

func (h SetRoleHandler) Handle(ctx context.Context, by domain.Principal, userID string, role string) (RoleChange, error) {
	r, err := domain.ParseRole(role)
	if err != nil {
		return RoleChange{}, err
	}
	var out RoleChange
	seq, err := h.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		out = RoleChange{Role: r, Previous: u.Role()}
		e, ok, err := u.ChangeRole(r, by, at)
		if err != nil || !ok {
			return nil, err
		}
		return []domain.Event{e}, nil
	})
	out.Seq = seq
	return out, err
}

// RevocationNote is what an admin may say about a revocation.
type RevocationNote struct {
	Actor string
	Note  string
}

// AdminRevokeSessionHandler revokes any user's session by id.
type AdminRevokeSessionHandler struct{ AdminDeps }

func (h AdminRevokeSessionHandler) Handle(ctx context.Context, by domain.Principal, sessionID string, n RevocationNote) (uint64, error) {
	if !domain.IsSessionID(sessionID) {
		return 0, domain.ErrSessionNotFound
	}
	userID, err := h.Owners.UserOfSession(ctx, sessionID)
	if err != nil {
		return 0, err
	}
	return h.Users.UpdateSessions(ctx, userID, []string{sessionID}, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, ok, err := u.RevokeByAdmin(sessionID, n.Actor, n.Note, by, at)
		if err != nil || !ok {
			return nil, err
		}
		return []domain.Event{e}, nil
	})
}

// AdminRevokeSessionsHandler revokes every live session of a user and
// says how many.
type AdminRevokeSessionsHandler struct{ AdminDeps }

func (h AdminRevokeSessionsHandler) Handle(ctx context.Context, by domain.Principal, userID string, n RevocationNote) (revoked int, seq uint64, err error) {
	seq, err = h.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		events, err := u.RevokeAllByAdmin(n.Actor, n.Note, by, at)
		revoked = len(events)
		return events, err
	})
	return revoked, seq, err
}

// Erasure is what EraseUser did: how many live sessions the user_erased
// event revoked, and whether the user was erased already (then nothing
// was appended, and the data key was destroyed again).
type Erasure struct {
	Revoked int
	Already bool
	Seq     uint64
}

// EraseUserHandler erases a user: a user_erased event (which revokes every
// live session of the user and frees the email), then the destruction of
// the user's data key, which makes the sealed email and secrets in the log
// unreadable. The event comes first: should the destruction fail, the
// erasure is decided and the caller erases again (which appends nothing
// and destroys the key).
type EraseUserHandler struct{ AdminDeps }

func (h EraseUserHandler) Handle(ctx context.Context, by domain.Principal, userID string) (Erasure, error) {
	var out Erasure
	seq, err := h.Users.Update(ctx, userID, func(u *domain.User, at time.Time) ([]domain.Event, error) {
		e, ok := u.Erase(by, at)
		out = Erasure{Already: !ok}
		if !ok {
			return nil, nil
		}
		out.Revoked = u.LiveSessions(at)
		return []domain.Event{e}, nil
	})
	if err != nil {
		return Erasure{}, err
	}
	out.Seq = seq
	if err := h.Secrets.Destroy(ctx, userID); err != nil {
		return out, fmt.Errorf("erase user %s: erased in the log, but its data key was not destroyed (erase again to finish): %w", userID, err)
	}
	return out, nil
}
