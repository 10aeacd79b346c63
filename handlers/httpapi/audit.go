package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/ports"
	"github.com/sessionledger/ledger/handlers/query"
)

// AdminKey guards the audit endpoints: the X-API-Key header is hashed and
// compared in constant time with the configured hash; the key itself is
// never stored.
type AdminKey [sha256.Size]byte

// HashAdminKey is how a raw key becomes an AdminKey.
func HashAdminKey(raw string) AdminKey { return sha256.Sum256([]byte(raw)) }

func (k AdminKey) matches(raw string) bool {
	h := sha256.Sum256([]byte(raw))
	return subtle.ConstantTimeCompare(h[:], k[:]) == 1
}

// Digests reports the projection's state and stream digests.
type Digests func() (map[string]any, error)

func (a *API) requireAdmin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-API-Key")
		switch {
		case key == "":
			writeError(w, newError(http.StatusUnauthorized, "ADMIN_KEY_REQUIRED", "this endpoint needs an admin key in X-API-Key"))
		case a.cfg.AdminKey == nil || !a.cfg.AdminKey.matches(key):
			writeError(w, newError(http.StatusUnauthorized, "ADMIN_KEY_INVALID", "the admin key is not valid"))
		default:
			next(w, r)
		}
	}
}

// parseTime reads an optional RFC 3339 query parameter.
func parseTime(r *http.Request, name string) (time.Time, *apiError) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, invalidRequest(name + " must be an RFC 3339 time, e.g. 2026-03-03T14:02:00Z")
	}
	return t.UTC(), nil
}

func (a *API) auditSession(w http.ResponseWriter, r *http.Request) {
	at, e := parseTime(r, "at")
	if e != nil {
		writeError(w, e)
		return
	}
	if at.IsZero() {
		at = a.cfg.Queries.Validate.Now()
	}
	res, err := a.cfg.Queries.Audit.SessionAsOf(r.Context(), r.PathValue("session_id"), at)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, AsOfJSON(res))
}

// AsOfJSON is the documented shape of an as-of verdict, shared by the HTTP
// API and `ledger audit verdict --json`.
func AsOfJSON(res query.AsOf) map[string]any {
	v := res.Verdict
	body := map[string]any{
		"session_id":      res.SessionID,
		"user_id":         res.UserID,
		"at":              res.At.Format(time.RFC3339Nano),
		"valid":           v.Valid,
		"reason":          string(v.Reason),
		"idle_expires_at": v.IdleExpiresAt.Format(time.RFC3339Nano),
		"max_expires_at":  v.MaxExpiresAt.Format(time.RFC3339Nano),
		"summary":         res.Summary,
	}
	switch v.Reason.Kind() {
	case "expired":
		body["expired"] = v.Reason.Detail()
	case "revoked":
		body["revoked_by"] = v.Reason.Detail()
		body["revoked_at"] = v.RevokedAt.Format(time.RFC3339Nano)
	}
	explanation := make([]map[string]any, 0, len(res.Explanation))
	for _, d := range res.Explanation {
		explanation = append(explanation, map[string]any{"role": d.Role, "seq": res.Seqs[d.Event.ID], "event": d.Event})
	}
	body["explanation"] = explanation
	return body
}

func (a *API) auditUserEvents(w http.ResponseWriter, r *http.Request) {
	since, e := parseTime(r, "since")
	if e == nil {
		var until time.Time
		if until, e = parseTime(r, "until"); e == nil {
			userID := r.PathValue("user_id")
			events, err := a.cfg.Queries.Audit.UserEvents(r.Context(), userID, since, until)
			if errors.Is(err, domain.ErrUserNotFound) {
				writeError(w, newError(http.StatusNotFound, "USER_NOT_FOUND", "no such user"))
				return
			}
			if err != nil {
				a.writeDomainError(w, r, err)
				return
			}
			out := make([]any, 0, len(events))
			for _, se := range events {
				out = append(out, StoredEventJSON(se))
			}
			writeJSON(w, http.StatusOK, map[string]any{"user_id": userID, "events": out})
			return
		}
	}
	writeError(w, e)
}

// StoredEventJSON is the documented export shape of one log entry, shared
// by the HTTP API and `ledger audit`: where it sits, and the event as stored.
func StoredEventJSON(se ports.StoredEvent) map[string]any {
	m := map[string]any{"seq": se.Seq, "subject": se.Subject, "stored_at": se.Stored.UTC().Format(time.RFC3339Nano)}
	if se.Err != nil {
		m["error"] = se.Err.Error()
	} else {
		m["event"] = se.Event
	}
	return m
}

func (a *API) auditDigest(w http.ResponseWriter, r *http.Request) {
	d, err := a.cfg.Digests()
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}
