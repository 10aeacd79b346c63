package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// openResult is an open-loop run at a fixed rate. Latency runs from the
// instant the generator found a request due, not from when a connection
// became free to send it, so a stalled server is charged for every request
// that queued behind the stall (no coordinated omission). Service latency
// runs from the actual send.
type openResult struct {
	Rate     float64
	Achieved float64
	Sent     int64
	Errors   int64
	lat, svc *hdrhistogram.Histogram // microseconds
	recorded time.Duration           // the part of the run that was recorded
}

// merge adds another run at the same rate (a slice of an interleaved run).
func (o openResult) merge(x openResult) openResult {
	if o.lat == nil {
		return x
	}
	o.lat.Merge(x.lat)
	o.svc.Merge(x.svc)
	o.Sent += x.Sent
	o.Errors += x.Errors
	o.recorded += x.recorded
	o.Achieved = float64(o.Sent) / o.recorded.Seconds()
	return o
}

// openLoopInterleaved runs each of urls (the tokens go with the first)
// open loop at rate for dur in all, in slices of about two seconds taken
// in turn (interleaveN), so that load from other tenants of a shared
// machine, which comes in bursts of seconds, falls on every target alike
// rather than on whichever ran during the burst. It returns the slice
// length too.
func openLoopInterleaved(ctx context.Context, urls []string, tokens []string, rate float64, dur time.Duration) ([]openResult, time.Duration, error) {
	out := make([]openResult, len(urls))
	var slice time.Duration
	// Each slice walks the pool on from where the last one stopped (about
	// rate × slice requests, and one per connection to warm it), as one
	// run would.
	walked := 0
	fns := make([]func(time.Duration) (float64, time.Duration, error), len(urls))
	for j := range urls {
		fns[j] = func(d time.Duration) (float64, time.Duration, error) {
			slice = d
			var toks []string
			if j == 0 && len(tokens) > 0 {
				off := walked % len(tokens)
				toks = append(append(make([]string, 0, len(tokens)), tokens[off:]...), tokens[:off]...)
				walked += int(rate*d.Seconds()) + openLoopWorkers
			}
			res, err := openLoop(ctx, urls[j], toks, rate, d)
			if err != nil {
				return 0, 0, err
			}
			out[j] = out[j].merge(res)
			return float64(res.Sent), res.recorded, nil
		}
	}
	if _, _, _, err := interleaveN(dur, 2*time.Second, fns...); err != nil {
		return nil, 0, err
	}
	return out, slice, nil
}

func (o openResult) q(h *hdrhistogram.Histogram, p float64) float64 {
	return float64(h.ValueAtQuantile(p)) / 1000
}

func (o openResult) detail() map[string]any {
	return map[string]any{
		"target_rate": o.Rate, "achieved_rate": o.Achieved, "requests": o.Sent, "errors": o.Errors,
		"p50_ms": o.q(o.lat, 50), "p90_ms": o.q(o.lat, 90), "p99_ms": o.q(o.lat, 99), "p999_ms": o.q(o.lat, 99.9),
		"max_ms":         float64(o.lat.Max()) / 1000,
		"service_p50_ms": o.q(o.svc, 50), "service_p99_ms": o.q(o.svc, 99),
	}
}

// openLoopWorkers is how many keep-alive connections carry the load; far
// more than rate × latency, so a request is never held back by an earlier
// one's response unless the server itself stalls.
const openLoopWorkers = 64

// openLoop sends GET rawURL with a rotating bearer token (none if tokens is
// empty) at rate requests/s for dur. It speaks HTTP/1.1 over plain
// keep-alive connections with pre-formatted requests instead of net/http's
// client, which on a 2-core machine would take as much CPU as the server it
// measures. The first part of the run warms up and is not recorded.
func openLoop(ctx context.Context, rawURL string, tokens []string, rate float64, dur time.Duration) (openResult, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return openResult{}, err
	}
	var next atomic.Uint64
	request := func(buf []byte) []byte {
		buf = append(buf[:0], "GET "...)
		buf = append(buf, u.RequestURI()...)
		buf = append(buf, " HTTP/1.1\r\nHost: "...)
		buf = append(buf, u.Host...)
		if len(tokens) > 0 {
			buf = append(buf, "\r\nAuthorization: Bearer "...)
			buf = append(buf, tokens[next.Add(1)%uint64(len(tokens))]...)
		}
		return append(buf, "\r\n\r\n"...)
	}
	conns := make([]*httpConn, openLoopWorkers)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.c.Close()
			}
		}
	}()
	for i := range conns {
		c, err := dialHTTP(u.Host)
		if err != nil {
			return openResult{}, err
		}
		conns[i] = c
		if _, err := c.do(request(nil)); err != nil { // warm the connection
			return openResult{}, err
		}
	}

	interval := time.Duration(float64(time.Second) / rate)
	warm := min(time.Second, dur/5)
	start := time.Now().Add(20 * time.Millisecond)
	recordFrom := start.Add(warm)
	end := start.Add(dur)
	// The pacer wakes up, hands every request that has come due to a free
	// worker, and sleeps until the next one. A request's latency runs from
	// the moment the pacer found it due: a server stall that keeps every
	// worker busy makes the pacer wait, and the requests queued behind the
	// stall are charged for it. Go timers on this kernel fire up to about a
	// millisecond late, so the schedule itself is not the reference.
	ticks := make(chan time.Time, openLoopWorkers)
	go func() {
		defer close(ticks)
		i := 0
		for ctx.Err() == nil {
			now := time.Now()
			for ; ; i++ {
				due := start.Add(time.Duration(i) * interval)
				if !due.Before(end) {
					return
				}
				if due.After(now) {
					time.Sleep(due.Sub(now))
					break
				}
				if due.Before(recordFrom) {
					ticks <- time.Time{} // warm-up: sent, not recorded
				} else {
					ticks <- now
				}
			}
		}
	}()
	res := openResult{Rate: rate, lat: newHist(), svc: newHist()}
	var mu sync.Mutex
	var sent, errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat, svc := newHist(), newHist()
			var buf []byte
			for due := range ticks {
				buf = request(buf)
				begin := time.Now()
				code, err := c.do(buf)
				done := time.Now()
				if c.broken {
					if nc, derr := dialHTTP(u.Host); derr == nil {
						c.c.Close()
						*c = *nc
					}
				}
				if due.IsZero() {
					continue
				}
				sent.Add(1)
				if err != nil || code != 200 {
					errs.Add(1)
					if err == nil {
						err = fmt.Errorf("status %d", code)
					}
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				_ = lat.RecordValue(max(1, done.Sub(due).Microseconds()))
				_ = svc.RecordValue(max(1, done.Sub(begin).Microseconds()))
			}
			mu.Lock()
			res.lat.Merge(lat)
			res.svc.Merge(svc)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.Sent, res.Errors = sent.Load(), errs.Load()
	res.recorded = end.Sub(recordFrom)
	res.Achieved = float64(res.Sent) / res.recorded.Seconds()
	if res.Errors > 0 {
		return res, fmt.Errorf("open loop %s: %d of %d requests failed, first: %v", rawURL, res.Errors, res.Sent, firstErr.Load())
	}
	return res, nil
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 30_000_000, 3) }

// httpConn is one keep-alive HTTP/1.1 connection that sends a prepared
// request and reads the response: status line, headers, and a body framed
// by Content-Length or chunked encoding.
type httpConn struct {
	c      net.Conn
	br     *bufio.Reader
	broken bool // an exchange failed, or the server said Connection: close
}

func dialHTTP(host string) (*httpConn, error) {
	c, err := net.Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	return &httpConn{c: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

var errBadResponse = errors.New("malformed HTTP response")

func (h *httpConn) do(req []byte) (int, error) {
	resp, err := h.exchange(req, nil)
	return resp.code, err
}

// response is what exchange read of an answer.
type response struct {
	code       int
	retryAfter int // seconds; -1 when absent
	close      bool
}

// exchange sends req and reads the answer; with body non-nil it appends
// the body there instead of discarding it. The connection is marked broken
// on any error or when the server announces it will close.
func (h *httpConn) exchange(req []byte, body *[]byte) (response, error) {
	resp, err := h.roundTrip(req, body)
	if err != nil || resp.close {
		h.broken = true
	}
	return resp, err
}

func (h *httpConn) roundTrip(req []byte, body *[]byte) (response, error) {
	resp := response{retryAfter: -1}
	_ = h.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := h.c.Write(req); err != nil {
		return resp, err
	}
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return resp, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return resp, errBadResponse
	}
	if resp.code, err = strconv.Atoi(string(line[9:12])); err != nil {
		return resp, errBadResponse
	}
	length, chunked := -1, false
	for {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return resp, err
		}
		if len(line) <= 2 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil {
				return resp, errBadResponse
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			resp.close = bytes.EqualFold(v, []byte("close"))
		case bytes.EqualFold(k, []byte("Retry-After")):
			if n, err := strconv.Atoi(string(v)); err == nil {
				resp.retryAfter = n
			}
		}
	}
	read := func(n int) error {
		if body == nil {
			_, err := h.br.Discard(n)
			return err
		}
		start := len(*body)
		*body = append(*body, make([]byte, n)...)
		_, err := io.ReadFull(h.br, (*body)[start:])
		return err
	}
	switch {
	case chunked:
		for {
			line, err := h.br.ReadSlice('\n')
			if err != nil {
				return resp, err
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(line, []byte(";"), 2)[0])), 16, 64)
			if err != nil || size < 0 || size > 1<<24 {
				return resp, errBadResponse
			}
			if err := read(int(size)); err != nil {
				return resp, err
			}
			if _, err := h.br.Discard(2); err != nil {
				return resp, err
			}
			if size == 0 {
				return resp, nil
			}
		}
	case length >= 0:
		return resp, read(length)
	default:
		return resp, fmt.Errorf("%w: no length", errBadResponse)
	}
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
