package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sessionledger/ledger/handlers/query"
)

// The revocation feed is a server-sent event stream (text/event-stream):
//
//	event: revocation            one per revoked session, in log order
//	id: 1234                     only once an event's sessions are all sent
//	data: {"seq":1234,"session_id":…,"user_id":…,"reason":"revoked:logout","at":…}
//
//	event: heartbeat             when nothing was revoked for a while
//	id: 1240                     nothing revoked up to here
//	data: {"applied_seq":1240,"fresh":true}
//
// A client resumes with Last-Event-ID (browsers' EventSource sends it by
// itself) or ?after_seq=N: the id is set only at points where everything
// up to it has been sent, so a resumed stream neither skips nor repeats a
// revocation.
const (
	// FeedPath is the feed's route; long-lived, so exempt from the
	// per-request timeout.
	FeedPath = "/v1/feed/revocations"
	// feedPage bounds one read of the revocation index.
	feedPage = 256
	// MaxFeedStreams bounds the streams served at once.
	MaxFeedStreams = 256
)

type (
	revocationEvent struct {
		Seq       uint64    `json:"seq"`
		SessionID string    `json:"session_id"`
		UserID    string    `json:"user_id"`
		Reason    string    `json:"reason"`
		At        time.Time `json:"at"`
	}
	heartbeatEvent struct {
		AppliedSeq uint64 `json:"applied_seq"`
		Fresh      bool   `json:"fresh"`
		// Lag is why the instance cannot confirm it is caught up, when
		// it cannot: a consumer should then not trust its cache.
		Lag string `json:"lag,omitempty"`
	}
)

var errTooManyStreams = newError(http.StatusServiceUnavailable, "BUSY", "too many revocation feeds are open on this instance; retry shortly")

func (a *API) feed(w http.ResponseWriter, r *http.Request) {
	cursor, e := feedStart(r)
	if e != nil {
		writeError(w, e)
		return
	}
	select {
	case a.feedSlots <- struct{}{}:
		defer func() { <-a.feedSlots }()
	default:
		e := *errTooManyStreams
		e.retryAfter = 5
		writeError(w, &e)
		return
	}
	rc := http.NewResponseController(w)
	// The first read shows whether there is a feed at all before the
	// stream is committed to.
	page, err := a.cfg.Queries.Feed.Next(r.Context(), cursor, feedPage, 0)
	if err != nil {
		a.writeDomainError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events on as they come
	w.WriteHeader(http.StatusOK)
	for {
		if err := rc.SetWriteDeadline(time.Now().Add(a.cfg.FeedHeartbeat + 10*time.Second)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return
		}
		if err := a.writeFeedPage(w, page); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if page, err = a.cfg.Queries.Feed.Next(r.Context(), page.Next, feedPage, a.cfg.FeedHeartbeat); err != nil {
			if r.Context().Err() == nil {
				a.log.Error("revocation feed stopped", "err", err)
			}
			return
		}
	}
}

func (a *API) writeFeedPage(w http.ResponseWriter, page query.FeedPage) error {
	var b strings.Builder
	if len(page.Revocations) == 0 {
		hb := heartbeatEvent{AppliedSeq: page.Applied, Fresh: true}
		if a.cfg.Freshness != nil {
			if err := a.cfg.Freshness.Check(); err != nil {
				hb.Fresh, hb.Lag = false, err.Error()
			}
		}
		writeSSE(&b, "heartbeat", page.Whole, page.Next.Seq, hb)
	}
	for i, rv := range page.Revocations {
		// The id marks a resumable point: after the last session of a
		// sequence, which the next one (or a whole page's end) shows.
		complete := i+1 < len(page.Revocations) && page.Revocations[i+1].Seq != rv.Seq ||
			i+1 == len(page.Revocations) && page.Whole
		writeSSE(&b, "revocation", complete, rv.Seq, revocationEvent(rv))
	}
	_, err := w.Write([]byte(b.String()))
	return err
}

func writeSSE(b *strings.Builder, event string, withID bool, id uint64, data any) {
	raw, _ := json.Marshal(data) // plain structs
	b.WriteString("event: " + event + "\n")
	if withID {
		b.WriteString("id: " + strconv.FormatUint(id, 10) + "\n")
	}
	b.WriteString("data: ")
	b.Write(raw)
	b.WriteString("\n\n")
}

// feedStart reads where the stream starts: Last-Event-ID (a resumed
// EventSource) wins over ?after_seq=; neither starts at the beginning.
func feedStart(r *http.Request) (query.FeedCursor, *apiError) {
	raw, what := strings.TrimSpace(r.Header.Get("Last-Event-ID")), "Last-Event-ID"
	if raw == "" && r.URL.RawQuery != "" {
		raw, _ = queryParam(r, "after_seq")
		what = "after_seq"
	}
	if raw == "" {
		return query.FeedCursor{}, nil
	}
	seq, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return query.FeedCursor{}, invalidRequest(fmt.Sprintf("%s must be a stream sequence (a non-negative integer)", what))
	}
	return query.FeedCursor{Seq: seq}, nil
}
