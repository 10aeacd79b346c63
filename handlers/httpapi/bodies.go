package httpapi

import (
	"math"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/ports"
	"github.com/sessionledger/ledger/handlers/query"
)

// Response bodies. Fields are declared in the order of their JSON names, so
// bodies read the same as the documented examples; omitempty marks what a
// body carries only sometimes.

// successBody is Bubble's {"status":"success","response":{...}}.
type successBody struct {
	Response any    `json:"response"`
	Status   string `json:"status"`
}

// issuedResponse is what signup and login answer.
type issuedResponse struct {
	Expires   int64  `json:"expires"` // seconds to the max deadline
	Seq       uint64 `json:"seq"`
	SessionID string `json:"session_id"`
	Token     string `json:"token"`
	UserID    string `json:"user_id"`
}

func issuedBody(is command.Issued) issuedResponse {
	return issuedResponse{Expires: int64(math.Round(is.ExpiresIn.Seconds())), Seq: is.Seq, SessionID: is.SessionID, Token: is.Token, UserID: is.UserID}
}

// seqResponse is what a write with nothing else to say answers.
type seqResponse struct {
	Seq uint64 `json:"seq"`
}

type revokedResponse struct {
	Revoked int    `json:"revoked"`
	Seq     uint64 `json:"seq"`
}

// validResponse is the 200 body of validate (a struct, too, because
// encoding a map costs a visible share of the hot path's CPU).
type validResponse struct {
	AAL           string `json:"aal"` // aal2 with a second factor, aal1 without
	ExpiresAt     string `json:"expires_at"`
	IdleExpiresAt string `json:"idle_expires_at"`
	KeepLoggedIn  bool   `json:"keep_logged_in"`
	MaxExpiresAt  string `json:"max_expires_at"`
	Method        string `json:"method"` // password or api_key
	MFA           bool   `json:"mfa"`
	Role          string `json:"role"`
	SessionID     string `json:"session_id"`
	UserID        string `json:"user_id"`
	Valid         bool   `json:"valid"`
}

// sessionsBody is one page of the session list; NextCursor, the cursor of
// the next page, is there only when there are more.
type sessionsBody struct {
	NextCursor string        `json:"next_cursor,omitempty"`
	Sessions   []sessionItem `json:"sessions"`
}

type sessionItem struct {
	CreatedAt  string `json:"created_at"`
	Current    bool   `json:"current"`
	ExpiresAt  string `json:"expires_at"`
	LastUsedAt string `json:"last_used_at"`
	Method     string `json:"method"` // password or api_key
	Reason     string `json:"reason,omitempty"`
	SessionID  string `json:"session_id"`
	Status     string `json:"status"`
}

func sessionsOf(page query.SessionsPage) sessionsBody {
	out := sessionsBody{NextCursor: page.Next, Sessions: make([]sessionItem, 0, len(page.Sessions))}
	for _, s := range page.Sessions {
		out.Sessions = append(out.Sessions, sessionItem{
			CreatedAt: s.CreatedAt.Format(rfc3339), Current: s.Current, ExpiresAt: s.ExpiresAt.Format(rfc3339),
			LastUsedAt: s.LastUsedAt.Format(rfc3339), Method: s.Method, Reason: string(s.Reason), SessionID: s.SessionID, Status: s.Status,
		})
	}
	return out
}

type statusBody struct {
	Status string `json:"status"`
}

// Readiness is the body of /readyz, ready or not.
type Readiness struct {
	AppliedSeq     uint64           `json:"applied_seq"`
	Degraded       bool             `json:"degraded,omitempty"` // rejected messages exist
	FreshAsOf      string           `json:"fresh_as_of,omitempty"`
	Lag            *uint64          `json:"lag,omitempty"` // events behind the stream's last sequence, when checked
	LagEvents      uint64           `json:"lag_events"`
	LagSeconds     float64          `json:"lag_seconds"`
	MaxLagSeconds  float64          `json:"max_lag_seconds"`
	Rejected       []ports.Rejected `json:"rejected,omitempty"` // the newest
	RejectedEvents uint64           `json:"rejected_events,omitempty"`
	Status         string           `json:"status,omitempty"` // "ready" when it is
	StreamFindings []string         `json:"stream_findings,omitempty"`
	StreamLastSeq  uint64           `json:"stream_last_seq"`
}

// notReadyBody is the 503 of /readyz: the error shape with the details.
type notReadyBody struct {
	StatusCode int       `json:"statusCode"`
	Reason     string    `json:"reason"`
	Message    string    `json:"message"`
	Detail     Readiness `json:"detail"`
}

// Digests is what GET /v1/audit/digest and `ledger audit digest --json`
// report: the state digest (equal for equal applied sequences, live or
// rebuilt) and the stream digest checkpoints to pin.
type Digests struct {
	AppliedSeq     uint64             `json:"applied_seq"`
	Checkpoints    []DigestCheckpoint `json:"checkpoints"`
	Rejected       []ports.Rejected   `json:"rejected"`
	RejectedEvents uint64             `json:"rejected_events"`
	StateDigest    string             `json:"state_digest"`
	StreamDigest   string             `json:"stream_digest"`
}

type DigestCheckpoint struct {
	Seq          uint64 `json:"seq"`
	StreamDigest string `json:"stream_digest"`
}

// AsOfBody is the documented shape of an as-of verdict, shared by the HTTP
// API and `ledger audit verdict --json`.
type AsOfBody struct {
	At            string         `json:"at"`
	Expired       string         `json:"expired,omitempty"`
	Explanation   []decisiveBody `json:"explanation"`
	IdleExpiresAt string         `json:"idle_expires_at"`
	MaxExpiresAt  string         `json:"max_expires_at"`
	Reason        string         `json:"reason"`
	RevokedAt     string         `json:"revoked_at,omitempty"`
	RevokedBy     string         `json:"revoked_by,omitempty"`
	SessionID     string         `json:"session_id"`
	Summary       string         `json:"summary"`
	UserID        string         `json:"user_id"`
	Valid         bool           `json:"valid"`
}

type decisiveBody struct {
	Event domain.Event `json:"event"`
	Role  string       `json:"role"`
	Seq   uint64       `json:"seq"`
}

// AsOfJSON is AsOfBody of an as-of verdict.
func AsOfJSON(res query.AsOf) AsOfBody {
	v := res.Verdict
	body := AsOfBody{
		At: res.At.Format(time.RFC3339Nano), IdleExpiresAt: v.IdleExpiresAt.Format(time.RFC3339Nano),
		MaxExpiresAt: v.MaxExpiresAt.Format(time.RFC3339Nano), Reason: string(v.Reason), SessionID: res.SessionID,
		Summary: res.Summary, UserID: res.UserID, Valid: v.Valid,
		Explanation: make([]decisiveBody, 0, len(res.Explanation)),
	}
	switch v.Reason.Kind() {
	case "expired":
		body.Expired = v.Reason.Detail()
	case "revoked":
		body.RevokedBy = v.Reason.Detail()
		body.RevokedAt = v.RevokedAt.Format(time.RFC3339Nano)
	}
	for _, d := range res.Explanation {
		body.Explanation = append(body.Explanation, decisiveBody{Event: d.Event, Role: d.Role, Seq: res.Seqs[d.Event.ID]})
	}
	return body
}

// StoredEventBody is the documented export shape of one log entry, shared
// by the HTTP API and `ledger audit`: where it sits, and the event as stored
// (or why it is not one).
type StoredEventBody struct {
	// Email is a user_registered event's email as the audit may show it:
	// the email, "(erased)" once the user's data key is destroyed, or
	// "(sealed)" where it cannot be opened (query.RevealEmail). The event
	// itself holds only its hash and sealed form.
	Email    string        `json:"email,omitempty"`
	Error    string        `json:"error,omitempty"`
	Event    *domain.Event `json:"event,omitempty"`
	Seq      uint64        `json:"seq"`
	StoredAt string        `json:"stored_at"`
	Subject  string        `json:"subject"`
}

// StoredEventJSON is StoredEventBody of a stored event.
func StoredEventJSON(se ports.StoredEvent) StoredEventBody {
	b := StoredEventBody{Seq: se.Seq, StoredAt: se.Stored.UTC().Format(time.RFC3339Nano), Subject: se.Subject}
	if se.Err != nil {
		b.Error = se.Err.Error()
	} else {
		e := se.Event
		b.Event = &e
	}
	return b
}

type userEventsBody struct {
	Events []StoredEventBody `json:"events"`
	UserID string            `json:"user_id"`
}
