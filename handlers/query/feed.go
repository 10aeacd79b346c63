package query

import (
	"context"
	"errors"
	"time"

	"github.com/sessionledger/ledger/handlers/ports"
)

// revocationLog is the read side's record of revocations, in log order.
type revocationLog interface {
	// Revocations are the sessions revoked by events after seq `after`
	// (after the session afterSession at that sequence, if given), at
	// most limit of them.
	Revocations(after uint64, afterSession string, limit int) ([]ports.Revocation, error)
	// Applied is the last stream sequence the read side has folded.
	Applied() uint64
	// WaitFor returns once seq is applied, or with ctx's error.
	WaitFor(ctx context.Context, seq uint64) error
}

// FeedCursor is where a reader of the feed stands: after every revocation
// of the events up to Seq, or, with Session set, only up to that session
// of the event at Seq.
type FeedCursor struct {
	Seq     uint64
	Session string
}

// FeedPage is what Next found. When Revocations is empty, nothing was
// revoked after the cursor up to Applied, so a reader may move its cursor
// there (a heartbeat).
type FeedPage struct {
	Revocations []ports.Revocation
	Next        FeedCursor
	Applied     uint64
	// Whole reports that the page ends with the last revocation of its
	// sequence: Next.Seq is a point to resume from.
	Whole bool
}

// FeedHandler serves the revocation feed: one entry per revoked session,
// a logout-others expanded into its sessions, in log order, so a gateway's
// cache can drop a token the moment the ledger revokes it.
type FeedHandler struct {
	Log revocationLog // nil: no feed
}

// ErrNoFeed means this instance serves no revocation feed.
var ErrNoFeed = errors.New("this instance serves no revocation feed")

// Next returns the revocations after c as soon as there are some, or,
// after wait without any, an empty page (a heartbeat).
func (h FeedHandler) Next(ctx context.Context, c FeedCursor, limit int, wait time.Duration) (FeedPage, error) {
	if h.Log == nil {
		return FeedPage{}, ErrNoFeed
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		applied := h.Log.Applied()
		rs, err := h.Log.Revocations(c.Seq, c.Session, limit)
		if err != nil {
			return FeedPage{}, err
		}
		if len(rs) > 0 {
			last := rs[len(rs)-1]
			page := FeedPage{Revocations: rs, Applied: applied, Next: FeedCursor{Seq: last.Seq, Session: last.SessionID}}
			// A short page reached the end of what is applied, and an
			// event is applied whole: its sequence is complete.
			if len(rs) < limit {
				page.Whole, page.Next.Session = true, ""
			}
			return page, nil
		}
		if h.Log.WaitFor(wctx, applied+1) != nil {
			if ctx.Err() != nil {
				return FeedPage{}, ctx.Err()
			}
			// Nothing revoked after the cursor up to applied: a reader
			// may stand there, never behind where it stood.
			next := c
			if applied > c.Seq {
				next = FeedCursor{Seq: applied}
			}
			return FeedPage{Applied: applied, Next: next, Whole: next.Session == ""}, nil
		}
	}
}
