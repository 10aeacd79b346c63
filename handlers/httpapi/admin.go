package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/query"
)

// The admin API (/v1/admin/*): service keys, apps, roles and revocations.
// Every route is Admins in the access table; the principal it let in is
// named in the events it causes.

type keyRequest struct {
	Name   *string  `json:"name"`
	Scopes []string `json:"scopes"`
}

// createdKeyResponse is the only answer that ever holds a raw key.
type createdKeyResponse struct {
	ID     string         `json:"id"`
	Key    string         `json:"key"`
	Name   string         `json:"name"`
	Scopes []domain.Scope `json:"scopes,omitempty"`
	Seq    uint64         `json:"seq"`
}

type credentialItem struct {
	CreatedAt string         `json:"created_at"`
	CreatedBy string         `json:"created_by"`
	ID        string         `json:"id"`
	Name      string         `json:"name"`
	RevokedAt string         `json:"revoked_at,omitempty"`
	RevokedBy string         `json:"revoked_by,omitempty"`
	Scopes    []domain.Scope `json:"scopes,omitempty"`
	Status    string         `json:"status"` // active or revoked
}

type keysBody struct {
	Keys []credentialItem `json:"keys"`
}

type appsBody struct {
	Apps []credentialItem `json:"apps"`
}

func credentialItems(cs []domain.Credential) []credentialItem {
	out := make([]credentialItem, 0, len(cs))
	for _, c := range cs {
		it := credentialItem{CreatedAt: c.CreatedAt.Format(time.RFC3339), CreatedBy: c.CreatedBy, ID: c.ID, Name: c.Name, Scopes: c.Scopes, Status: "active"}
		if c.Revoked() {
			it.Status, it.RevokedAt, it.RevokedBy = "revoked", c.RevokedAt.Format(time.RFC3339), c.RevokedBy
		}
		out = append(out, it)
	}
	return out
}

func (a *API) createServiceKey(w http.ResponseWriter, r *http.Request) {
	var req keyRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.Name == nil || req.Scopes == nil {
		writeError(w, invalidRequest("name and scopes are required"))
		return
	}
	k, err := a.cfg.Admin.CreateServiceKey.Handle(r.Context(), principalOf(r), *req.Name, req.Scopes)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusCreated, createdKeyResponse{ID: k.ID, Key: k.Key, Name: k.Name, Scopes: k.Scopes, Seq: k.Seq}, k.Seq)
}

func (a *API) listServiceKeys(w http.ResponseWriter, r *http.Request) {
	cs, err := a.cfg.Access.List(domain.KindServiceKey)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, keysBody{Keys: credentialItems(cs)})
}

func (a *API) revokeServiceKey(w http.ResponseWriter, r *http.Request) {
	seq, err := a.cfg.Admin.RevokeServiceKey.Handle(r.Context(), principalOf(r), r.PathValue("id"))
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, seqResponse{Seq: seq}, seq)
}

type appRequest struct {
	Name *string `json:"name"`
}

func (a *API) registerApp(w http.ResponseWriter, r *http.Request) {
	var req appRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.Name == nil {
		writeError(w, invalidRequest("name is required"))
		return
	}
	k, err := a.cfg.Admin.RegisterApp.Handle(r.Context(), principalOf(r), *req.Name)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusCreated, createdKeyResponse{ID: k.ID, Key: k.Key, Name: k.Name, Seq: k.Seq}, k.Seq)
}

func (a *API) listApps(w http.ResponseWriter, r *http.Request) {
	cs, err := a.cfg.Access.List(domain.KindApp)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, appsBody{Apps: credentialItems(cs)})
}

func (a *API) revokeApp(w http.ResponseWriter, r *http.Request) {
	seq, err := a.cfg.Admin.RevokeApp.Handle(r.Context(), principalOf(r), r.PathValue("id"))
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, seqResponse{Seq: seq}, seq)
}

type roleRequest struct {
	Role *string `json:"role"`
}

type roleResponse struct {
	Previous string `json:"previous"`
	Role     string `json:"role"`
	Seq      uint64 `json:"seq"`
	UserID   string `json:"user_id"`
}

// adminUserError answers an error about a user named in the path: an
// unknown one is 404 USER_NOT_FOUND (not the 401 a token's vanished user
// gets).
func (a *API) adminUserError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, domain.ErrUserNotFound) {
		err = query.ErrUnknownUser
	}
	a.writeDomainError(w, r, err)
}

func (a *API) setRole(w http.ResponseWriter, r *http.Request) {
	var req roleRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.Role == nil {
		writeError(w, invalidRequest("role is required"))
		return
	}
	userID := r.PathValue("id")
	c, err := a.cfg.Admin.SetRole.Handle(r.Context(), principalOf(r), userID, *req.Role)
	if err != nil {
		a.adminUserError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, roleResponse{Previous: string(c.Previous), Role: string(c.Role), Seq: c.Seq, UserID: userID}, c.Seq)
}

func (a *API) adminUserSessions(w http.ResponseWriter, r *http.Request) {
	userID := r.PathValue("id")
	if err := a.cfg.Access.UserExists(userID); err != nil {
		a.adminUserError(w, r, err)
		return
	}
	q, err := sessionsQuery(r)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	page, err := a.cfg.Queries.Sessions.Handle(r.Context(), userID, "", q)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sessionsOf(page))
}

type noteRequest struct {
	Actor *string `json:"actor"`
	Note  *string `json:"note"`
}

// readNote reads the optional {actor, note} body of an admin revocation:
// no body at all is no note.
func readNote(w http.ResponseWriter, r *http.Request) (command.RevocationNote, *apiError) {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return command.RevocationNote{}, nil
	}
	var req noteRequest
	if e := decodeBody(w, r, &req); e != nil {
		return command.RevocationNote{}, e
	}
	var n command.RevocationNote
	if req.Actor != nil {
		n.Actor = *req.Actor
	}
	if req.Note != nil {
		n.Note = *req.Note
	}
	return n, nil
}

func (a *API) adminRevokeSession(w http.ResponseWriter, r *http.Request) {
	n, e := readNote(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	seq, err := a.cfg.Admin.RevokeSession.Handle(r.Context(), principalOf(r), r.PathValue("id"), n)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, seqResponse{Seq: seq}, seq)
}

func (a *API) adminRevokeUserSessions(w http.ResponseWriter, r *http.Request) {
	n, e := readNote(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	revoked, seq, err := a.cfg.Admin.RevokeSessions.Handle(r.Context(), principalOf(r), r.PathValue("id"), n)
	if err != nil {
		a.adminUserError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, revokedResponse{Revoked: revoked, Seq: seq}, seq)
}

type erasureResponse struct {
	Already bool   `json:"already_erased"`
	Revoked int    `json:"revoked"`
	Seq     uint64 `json:"seq"`
	UserID  string `json:"user_id"`
}

// eraseUser erases a user: user_erased (every live session revoked, the
// email free for a new signup), then the user's data key destroyed, so the
// sealed email and secrets in the log are unreadable. Again: 200, nothing
// appended, the key destroyed again.
func (a *API) eraseUser(w http.ResponseWriter, r *http.Request) {
	userID := r.PathValue("id")
	out, err := a.cfg.Admin.EraseUser.Handle(r.Context(), principalOf(r), userID)
	if err != nil {
		a.adminUserError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, erasureResponse{Already: out.Already, Revoked: out.Revoked, Seq: out.Seq, UserID: userID}, out.Seq)
}
