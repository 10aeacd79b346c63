package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"time"
)

// AdminKey is the bootstrap key (a service key with every scope that is in
// no event): the X-API-Key header is hashed and compared in constant time
// with the configured hash; the key itself is never stored.
type AdminKey [sha256.Size]byte

// HashAdminKey is how a raw key becomes an AdminKey.
func HashAdminKey(raw string) AdminKey { return sha256.Sum256([]byte(raw)) }

func (k AdminKey) matches(raw string) bool {
	h := sha256.Sum256([]byte(raw))
	return subtle.ConstantTimeCompare(h[:], k[:]) == 1
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

func (a *API) auditUserEvents(w http.ResponseWriter, r *http.Request) {
	since, e := parseTime(r, "since")
	if e == nil {
		var until time.Time
		if until, e = parseTime(r, "until"); e == nil {
			userID := r.PathValue("user_id")
			events, err := a.cfg.Queries.Audit.UserEvents(r.Context(), userID, since, until)
			if err != nil {
				a.writeDomainError(w, r, err)
				return
			}
			body := userEventsBody{UserID: userID, Events: make([]StoredEventBody, 0, len(events))}
			for _, se := range events {
				b := StoredEventJSON(se)
				if se.Err == nil {
					b.Email = a.cfg.Queries.Audit.RevealEmail(r.Context(), se.Event)
				}
				body.Events = append(body.Events, b)
			}
			writeJSON(w, http.StatusOK, body)
			return
		}
	}
	writeError(w, e)
}

func (a *API) auditDigest(w http.ResponseWriter, r *http.Request) {
	d, err := a.cfg.Digests()
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}
