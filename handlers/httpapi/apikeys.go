package httpapi

import (
	"net/http"
	"time"

	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/query"
)

// Personal API keys: a logged-in user creates, lists and revokes them
// (Bearer token of the user), and exchanges one with the account's email
// for a session token (POST /v1/auth/api-key, a credential route).

type createAPIKeyRequest struct {
	Name      *string `json:"name"`
	ExpiresIn *int64  `json:"expires_in"` // seconds; absent: never expires
}

// createdAPIKeyResponse is the only answer that ever holds the key.
type createdAPIKeyResponse struct {
	APIKey    string `json:"api_key"`
	CreatedAt string `json:"created_at"`
	ExpiresAt string `json:"expires_at,omitempty"`
	KeyID     string `json:"key_id"`
	Name      string `json:"name"`
	Seq       uint64 `json:"seq"`
}

type apiKeysBody struct {
	APIKeys []apiKeyItem `json:"api_keys"`
}

type apiKeyItem struct {
	CreatedAt  string `json:"created_at"`
	ExpiresAt  string `json:"expires_at,omitempty"`
	Hint       string `json:"hint"`
	KeyID      string `json:"key_id"`
	LastUsedAt string `json:"last_used_at,omitempty"`
	Name       string `json:"name"`
	Status     string `json:"status"`
}

type apiKeyLoginRequest struct {
	Email        *string `json:"email"`
	APIKey       *string `json:"api_key"`
	KeepLoggedIn *bool   `json:"keep_logged_in"`
}

func timeOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(rfc3339)
}

func (a *API) createAPIKey(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	var req createAPIKeyRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.Name == nil {
		writeError(w, invalidRequest("name is required"))
		return
	}
	k, err := a.cfg.Commands.CreateAPIKey.Handle(r.Context(), caller, command.NewAPIKey{Name: *req.Name, ExpiresInSeconds: req.ExpiresIn})
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusCreated, createdAPIKeyResponse{
		APIKey: k.Key, CreatedAt: k.CreatedAt.Format(rfc3339), ExpiresAt: timeOrEmpty(k.ExpiresAt),
		KeyID: k.KeyID, Name: k.Name, Seq: k.Seq,
	}, k.Seq)
}

func (a *API) listAPIKeys(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	keys, err := a.cfg.Queries.APIKeys.Handle(r.Context(), caller.UserID)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apiKeysOf(keys))
}

func apiKeysOf(keys []query.APIKeyView) apiKeysBody {
	out := apiKeysBody{APIKeys: make([]apiKeyItem, 0, len(keys))}
	for _, k := range keys {
		out.APIKeys = append(out.APIKeys, apiKeyItem{
			CreatedAt: k.CreatedAt.Format(rfc3339), ExpiresAt: timeOrEmpty(k.ExpiresAt), Hint: k.Hint, KeyID: k.KeyID,
			LastUsedAt: timeOrEmpty(k.LastUsedAt), Name: k.Name, Status: k.Status,
		})
	}
	return out
}

func (a *API) revokeAPIKey(w http.ResponseWriter, r *http.Request) {
	caller, ok := a.caller(w, r)
	if !ok {
		return
	}
	seq, err := a.cfg.Commands.RevokeAPIKey.Handle(r.Context(), caller, r.PathValue("id"))
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, seqResponse{Seq: seq}, seq)
}

func (a *API) apiKeyLogin(w http.ResponseWriter, r *http.Request) {
	var req apiKeyLoginRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.Email == nil || req.APIKey == nil {
		writeError(w, invalidRequest("email and api_key are required"))
		return
	}
	c := command.APIKeyCredentials{Email: *req.Email, APIKey: *req.APIKey}
	if req.KeepLoggedIn != nil {
		c.KeepLoggedIn = *req.KeepLoggedIn
	}
	is, err := a.cfg.Commands.APIKeyLogin.Handle(r.Context(), c)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	successAt(w, http.StatusOK, issuedBody(is), is.Seq)
}
