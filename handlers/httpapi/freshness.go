package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
)

// Read-your-writes across instances. Every write answers with the stream
// sequence of its last event (X-Ledger-Seq and "seq" in the response
// object). A later request to any instance may send that number back as
// X-Ledger-Min-Seq (or ?min_seq=): the instance waits, bounded, until its
// projection has applied it, and answers 503 PROJECTION_BEHIND if it does
// not get there in time.
const (
	HeaderSeq    = "X-Ledger-Seq"
	HeaderMinSeq = "X-Ledger-Min-Seq"
	paramMinSeq  = "min_seq"
)

// Freshness is the instance's view of how current its projection is.
type Freshness interface {
	// WaitApplied waits, bounded, until the projection has applied seq; its
	// error means it did not.
	WaitApplied(ctx context.Context, seq uint64) error
	// InLog fails if the log has not reached seq: no write answered with
	// it, so there is nothing to wait for.
	InLog(ctx context.Context, seq uint64) error
	// Check fails when the instance cannot confirm, within the configured
	// lag bound, that it holds everything in the stream.
	Check() error
}

func projectionBehind(err error) *apiError {
	return newError(http.StatusServiceUnavailable, "PROJECTION_BEHIND", err.Error())
}

// minSeqOf reads the requested minimum sequence: the header wins over the
// query parameter; absent is 0.
func minSeqOf(r *http.Request) (uint64, *apiError) {
	raw := strings.TrimSpace(r.Header.Get(HeaderMinSeq))
	what := HeaderMinSeq
	if raw == "" && r.URL.RawQuery != "" {
		var present bool
		raw, present = queryParam(r, paramMinSeq)
		what = paramMinSeq
		if raw == "" && present {
			return 0, invalidRequest(paramMinSeq + " must be a stream sequence (a non-negative integer)")
		}
	}
	if raw == "" {
		return 0, nil
	}
	seq, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, invalidRequest(what + " must be a stream sequence (a non-negative integer)")
	}
	return seq, nil
}

// readYourWrites holds any request that carries a min_seq until this
// instance has applied that sequence.
func (a *API) readYourWrites(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isGatewayPath(r.URL.Path) {
			// Gateway mode: a min_seq there would be the gateway's
			// client's, not the gateway's (gateway.go).
			next.ServeHTTP(w, r)
			return
		}
		seq, e := minSeqOf(r)
		if e != nil {
			writeError(w, e)
			return
		}
		if seq > 0 && a.cfg.Freshness != nil {
			// A made-up sequence must not hold the request for the whole
			// wait (through a gateway, every request of that client).
			if err := a.cfg.Freshness.InLog(r.Context(), seq); err != nil {
				writeError(w, invalidRequest(HeaderMinSeq+" / min_seq is beyond the end of the ledger: send back a sequence a write answered with"))
				return
			}
			if err := a.cfg.Freshness.WaitApplied(r.Context(), seq); err != nil {
				writeError(w, projectionBehind(err))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// failClosed answers 503 PROJECTION_BEHIND instead of running h when the
// instance cannot vouch that its projection is current: a "valid" from a
// stale projection could be a token revoked elsewhere.
func (a *API) failClosed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Freshness != nil {
			if err := a.cfg.Freshness.Check(); err != nil {
				writeError(w, projectionBehind(err))
				return
			}
		}
		h(w, r)
	}
}

// successAt is success for a write: the X-Ledger-Seq header carries the
// stream sequence the write reached, as does the response's "seq".
func successAt(w http.ResponseWriter, status int, response any, seq uint64) {
	w.Header().Set(HeaderSeq, strconv.FormatUint(seq, 10))
	success(w, status, response)
}
