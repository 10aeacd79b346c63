package query

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
)

// Paging of the session list.
const (
	DefaultSessionsLimit = 50
	MaxSessionsLimit     = 200
)

// Why a session list request is refused (400 INVALID_REQUEST).
var (
	ErrInvalidLimit  = errors.New("limit must be a whole number from 1 to 200")
	ErrInvalidCursor = errors.New("cursor is not one this API returned")
	ErrInvalidStatus = errors.New("status must be all, or absent for live sessions only")
)

// SessionsQuery asks for one page of a user's session list, which runs
// newest first.
type SessionsQuery struct {
	Limit int                    // 1 to MaxSessionsLimit
	After *ports.SessionPosition // nil: the first page
	All   bool                   // every session, not only the live ones
}

// ParseSessionsQuery reads the list's parameters as the API takes them; a
// nil string is a parameter that was not given. An empty cursor is the
// first page.
func ParseSessionsQuery(limit, cursor, status *string) (SessionsQuery, error) {
	q := SessionsQuery{Limit: DefaultSessionsLimit}
	if limit != nil {
		n, err := strconv.Atoi(*limit)
		if err != nil || n < 1 || n > MaxSessionsLimit {
			return SessionsQuery{}, ErrInvalidLimit
		}
		q.Limit = n
	}
	if cursor != nil && *cursor != "" {
		pos, err := decodeCursor(*cursor)
		if err != nil {
			return SessionsQuery{}, err
		}
		q.After = &pos
	}
	if status != nil {
		if *status != "all" {
			return SessionsQuery{}, ErrInvalidStatus
		}
		q.All = true
	}
	return q, nil
}

// A cursor is the position of the last session of a page: its start time
// (Unix seconds, 8 bytes, and nanoseconds, 4) and id, base64url. Clients
// treat it as opaque.
const cursorTimeLen = 12

func encodeCursor(p ports.SessionPosition) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, cursorTimeLen+len(p.SessionID)), uint64(p.StartedAt.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(p.StartedAt.Nanosecond()))
	return base64.RawURLEncoding.EncodeToString(append(b, p.SessionID...))
}

func decodeCursor(c string) (ports.SessionPosition, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) <= cursorTimeLen {
		return ports.SessionPosition{}, ErrInvalidCursor
	}
	sec, nsec := int64(binary.BigEndian.Uint64(b)), binary.BigEndian.Uint32(b[8:])
	sid := string(b[cursorTimeLen:])
	if sec <= 0 || nsec >= 1e9 || !domain.IsSessionID(sid) {
		return ports.SessionPosition{}, ErrInvalidCursor
	}
	return ports.SessionPosition{StartedAt: time.Unix(sec, int64(nsec)).UTC(), SessionID: sid}, nil
}

// SessionView is one line of the caller's session list.
type SessionView struct {
	SessionID  string
	CreatedAt  time.Time
	LastUsedAt time.Time
	ExpiresAt  time.Time
	Status     string // active, expired or revoked
	Reason     domain.Reason
	Current    bool
	Method     string // password or api_key
}

// SessionsPage is one page of the list; Next is the cursor of the next
// page, empty on the last one.
type SessionsPage struct {
	Sessions []SessionView
	Next     string
}

type userSessionReader interface {
	// UserSessions lists a user's sessions newest first after `after`, at
	// most limit of those keep accepts, and whether there are more.
	// liveOnly may leave out sessions that are not live now.
	UserSessions(userID string, liveOnly bool, after *ports.SessionPosition, limit int, keep func(*domain.Session) bool) ([]*domain.Session, bool, error)
}

// SessionsHandler lists a user's sessions, newest first, a page at a time:
// the live ones, or with All every one the user ever had.
type SessionsHandler struct {
	Sessions userSessionReader
	Now      func() time.Time
}

func (h SessionsHandler) Handle(_ context.Context, userID, currentSessionID string, q SessionsQuery) (SessionsPage, error) {
	if q.Limit < 1 || q.Limit > MaxSessionsLimit {
		return SessionsPage{}, ErrInvalidLimit
	}
	now := h.Now()
	var keep func(*domain.Session) bool
	if !q.All {
		keep = func(s *domain.Session) bool { return s.Current(now).Valid }
	}
	sessions, more, err := h.Sessions.UserSessions(userID, !q.All, q.After, q.Limit, keep)
	if err != nil {
		return SessionsPage{}, err
	}
	out := SessionsPage{Sessions: make([]SessionView, 0, len(sessions))}
	for _, s := range sessions {
		v := s.Current(now)
		status := "active"
		if !v.Valid {
			status = v.Reason.Kind()
		}
		out.Sessions = append(out.Sessions, SessionView{
			SessionID: s.ID(), CreatedAt: s.StartedAt(), LastUsedAt: s.LastUseAt(),
			ExpiresAt: v.ExpiresAt(), Status: status, Reason: v.Reason, Current: s.ID() == currentSessionID,
			Method: s.Method(),
		})
	}
	if more && len(sessions) > 0 {
		last := sessions[len(sessions)-1]
		out.Next = encodeCursor(ports.SessionPosition{StartedAt: last.StartedAt(), SessionID: last.ID()})
	}
	return out, nil
}
