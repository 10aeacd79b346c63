package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"
)

// With --profile DIR the ledger binary is built with one extra file, added
// through `go build -overlay` so that nothing in the repository changes: it
// serves net/http/pprof on a loopback port it writes to the file named by
// LEDGER_BENCH_PPROF. The bench then saves CPU profiles of the server during
// the validate and touched runs and of `ledger rebuild`, an execution trace
// during the open-loop validate run, a heap profile of
// the large server, and CPU profiles of its own process (Store and the
// embedded NATS server) during the append runs and during the audit verify.
const pprofOverlay = `package main

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	f := os.Getenv("LEDGER_BENCH_PPROF")
	if f == "" {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	_ = os.WriteFile(f, []byte(ln.Addr().String()), 0o644)
	go func() { _ = http.Serve(ln, nil) }()
}
`

// buildArgs are the extra `go build` arguments for a profiling build.
func (r *runner) buildArgs() ([]string, error) {
	if r.prof == "" {
		return nil, nil
	}
	if err := os.MkdirAll(r.prof, 0o755); err != nil {
		return nil, err
	}
	src := filepath.Join(r.work, "zz_benchpprof.go")
	if err := os.WriteFile(src, []byte(pprofOverlay), 0o644); err != nil {
		return nil, err
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	ov, err := json.Marshal(map[string]any{"Replace": map[string]string{filepath.Join(wd, "cmd/ledger/zz_benchpprof.go"): src}})
	if err != nil {
		return nil, err
	}
	ovPath := filepath.Join(r.work, "overlay.json")
	if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
		return nil, err
	}
	return []string{"-overlay", ovPath}, nil
}

// pprofEnv is the environment entry that makes a profiling build listen,
// and the file where it writes its address.
func (r *runner) pprofEnv(name string) (env []string, addrFile string) {
	if r.prof == "" {
		return nil, ""
	}
	addrFile = filepath.Join(r.work, name+".pprof-addr")
	_ = os.Remove(addrFile)
	return []string{"LEDGER_BENCH_PPROF=" + addrFile}, addrFile
}

// fetchProfile saves /debug/pprof/<kind> of the process whose address is in
// addrFile (waiting for it to appear) to DIR/name.
func (r *runner) fetchProfile(ctx context.Context, addrFile, kind, name string) error {
	var addr []byte
	for i := 0; ; i++ {
		b, err := os.ReadFile(addrFile)
		if err == nil && len(b) > 0 {
			addr = b
			break
		}
		if i > 300 {
			return fmt.Errorf("no pprof address in %s", addrFile)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+strings.TrimSpace(string(addr))+"/debug/pprof/"+kind, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("pprof %s: %s %s", kind, resp.Status, b)
	}
	f, err := os.Create(filepath.Join(r.prof, name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	logf("profile saved: %s", filepath.Join(r.prof, name))
	return f.Close()
}

// profileWhile runs fn while a CPU profile of the server is taken.
func (r *runner) profileWhile(ctx context.Context, addrFile, name string, secs int, fn func() error) error {
	return r.recordWhile(ctx, addrFile, "profile", name, secs, fn)
}

// traceWhile runs fn while an execution trace of the server is taken (go
// tool trace): where a tail latency comes from, the collector's phases and
// which goroutines waited for a P, which a CPU profile does not show.
func (r *runner) traceWhile(ctx context.Context, addrFile, name string, secs int, fn func() error) error {
	return r.recordWhile(ctx, addrFile, "trace", name, secs, fn)
}

// recordWhile runs fn while /debug/pprof/<kind>?seconds=secs of the server
// is saved to name.
func (r *runner) recordWhile(ctx context.Context, addrFile, kind, name string, secs int, fn func() error) error {
	if r.prof == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() { errc <- r.fetchProfile(ctx, addrFile, fmt.Sprintf("%s?seconds=%d", kind, secs), name) }()
	err := fn()
	if perr := <-errc; perr != nil {
		logf("profile %s: %v", name, perr)
	}
	return err
}

// selfProfile takes a CPU profile of the bench process itself around fn.
func (r *runner) selfProfile(name string, fn func() error) error {
	if r.prof == "" {
		return fn()
	}
	f, err := os.Create(filepath.Join(r.prof, name))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	err = fn()
	pprof.StopCPUProfile()
	logf("profile saved: %s", filepath.Join(r.prof, name))
	return err
}
