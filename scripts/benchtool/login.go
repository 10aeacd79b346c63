package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/sessionledger/ledger/handlers/command"
)

const loginConcurrency = 2

// loginBench compares logins/s over HTTP with the raw argon2id rate at the
// same parameters and concurrency: a login is one argon2id verification plus
// a lookup, an append and the projection catching up with it.
func (r *runner) loginBench(ctx context.Context, srv *server, ds *dataset) error {
	tr := &http.Transport{MaxIdleConnsPerHost: loginConcurrency}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next atomic.Uint64
	login := func() error {
		email := ds.emails[next.Add(1)%uint64(len(ds.emails))]
		body, _ := json.Marshal(map[string]any{"email": email, "password": benchPassword, "keep_logged_in": false})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.url+"/v1/auth/login", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("login %s: %d %s", email, resp.StatusCode, b)
		}
		return nil
	}
	hash := func() error {
		_, err := argon2id.CreateHash(benchPassword, &command.OWASPParams)
		return err
	}
	if err := login(); err != nil { // warm: connection, first allocation
		return err
	}
	wrap := func(fn func() error) func(time.Duration) (float64, time.Duration, error) {
		return func(d time.Duration) (float64, time.Duration, error) {
			n, el, err := concurrently(ctx, loginConcurrency, d, fn)
			return float64(n), el, err
		}
	}
	pr, err := interleave(r.s.loginDur, time.Second, wrap(hash), wrap(login))
	if err != nil {
		return err
	}
	f := ratioFigure("login_rate", fmt.Sprintf("login rate (HTTP, concurrency %d)", loginConcurrency), "logins/s",
		pr.rateB(), pr.rateA(), "argon2id.CreateHash", 0.9)
	f.Note = pr.note()
	r.add(withDetail(withDetail(f, pr.detail()), map[string]any{"logins": pr.opsB, "hashes": pr.opsA,
		"argon2id": fmt.Sprintf("m=%d KiB t=%d p=%d", command.OWASPParams.Memory, command.OWASPParams.Iterations, command.OWASPParams.Parallelism)}))
	return nil
}

// concurrently runs fn in n goroutines until dur has passed and returns how
// many calls completed and how long until the last one did.
func concurrently(ctx context.Context, n int, dur time.Duration, fn func() error) (int, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(dur)
	var count atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := fn(); err != nil {
					errc <- err
					return
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	select {
	case err := <-errc:
		return 0, el, err
	default:
	}
	return int(count.Load()), el, ctx.Err()
}
