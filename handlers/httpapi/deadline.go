package httpapi

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineCtx is context.WithDeadline(parent, deadline) whose timer starts
// only when something can wait on it: the first Done (which every select,
// and every context derived from it, calls), or an Err or Value asked
// past the deadline. Until then it reports the deadline (Deadline) and
// the parent's cancellation (Err), and costs no timer, no registration
// with the connection's context and no allocation of its own. Most
// requests (validate, /healthz) never wait on their context; with
// context.WithTimeout each paid a timer, three allocations and a lock of
// the connection's context, about 6 % of the server's CPU at peak, for a
// bound nothing read.
//
// Once started it is the context.WithDeadline it stands for: Done, Err
// and Value (which context.Cause and derived contexts read to find their
// parent's cancellation) are that context's.
type deadlineCtx struct {
	parent   context.Context
	deadline time.Time

	once    sync.Once
	started atomic.Bool
	ctx     context.Context // set once, before started
	stop    context.CancelFunc
}

// init makes c bound parent by d from now on (or by parent's own deadline
// if that comes first).
func (c *deadlineCtx) init(parent context.Context, d time.Time) {
	c.parent, c.deadline = parent, d
	if pd, ok := parent.Deadline(); ok && pd.Before(d) {
		c.deadline = pd
	}
}

// start starts the timer (once) and returns the started context.
func (c *deadlineCtx) start() context.Context {
	c.once.Do(func() {
		c.ctx, c.stop = context.WithDeadline(c.parent, c.deadline)
		c.started.Store(true)
	})
	return c.ctx
}

// cancel releases the timer, if it was started, as the CancelFunc of
// context.WithDeadline does; the request is over.
func (c *deadlineCtx) cancel() {
	if c.started.Load() {
		c.stop()
	}
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Done() <-chan struct{} { return c.start().Done() }

func (c *deadlineCtx) Err() error {
	if c.started.Load() || !time.Now().Before(c.deadline) {
		return c.start().Err()
	}
	return c.parent.Err()
}

func (c *deadlineCtx) Value(key any) any {
	if c.started.Load() || !time.Now().Before(c.deadline) {
		return c.start().Value(key)
	}
	return c.parent.Value(key)
}
