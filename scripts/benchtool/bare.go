package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// The bare baseline: validate against a minimal net/http server in a
// process of its own (the bench binary re-executed with bareHTTPArg), which
// answers every request, whatever its method, path and headers, with a
// fixed JSON body the size of validate's answer and the same response
// headers. What separates validate from it is the ledger's own work per
// request (middleware, token parsing, the projection lookup, encoding the
// answer); /healthz, the other baseline, runs inside the ledger's server
// and shares its middleware.

// bareHTTPArg, as the first argument, makes the bench binary the bare
// net/http server (bareHTTPMain) instead of the bench.
const bareHTTPArg = "__bare-http"

// bareListening prefixes the line the bare server prints on its stdout
// once it listens: "bare-http listening 127.0.0.1:PORT".
const bareListening = "bare-http listening "

// bareBody is shaped like validate's answer to a seeded session (the
// fields of handlers/httpapi.validResponse, in the order encoding/json
// writes them, ids as long as the ledger's: a 32-hex-digit session id, a
// UUID user id), so both send about the same bytes.
var bareBody = []byte(`{"aal":"aal1","expires_at":"2026-12-22T18:07:33Z","idle_expires_at":"2026-12-22T18:07:33Z",` +
	`"keep_logged_in":true,"max_expires_at":"2027-02-20T18:07:33Z","method":"password","mfa":false,"role":"user",` +
	`"session_id":"7c3e9a512f0d6c1e8b47019aac1f7b4d","user_id":"019aac1f-7b4c-7f12-8e0a-5b3c9d2e1f60","valid":true}` + "\n")

// bareHandler answers every request with bareBody, after reading the
// request's body (a POST's) to the end.
func bareHandler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Ledger-User-Id", "019aac1f-7b4c-7f12-8e0a-5b3c9d2e1f60")
	h.Set("X-Ledger-Session-Id", "7c3e9a512f0d6c1e8b47019aac1f7b4d")
	h.Set("X-Ledger-Role", "user")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(bareBody)
}

// bareHTTPMain listens on a loopback port the kernel picks, says which on
// its stdout, and serves until it is signalled (or its parent dies: the
// bench starts it with Pdeathsig).
func bareHTTPMain(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "bare-http: no arguments expected")
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bare-http:", err)
		return 1
	}
	fmt.Printf("%s%s\n", bareListening, ln.Addr())
	srv := &http.Server{Handler: http.HandlerFunc(bareHandler), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "bare-http:", err)
		return 1
	}
	return 0
}

// bareServer is a running bare net/http process.
type bareServer struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

// startBare starts the bare server as a process of its own and returns
// once it listens.
func startBare(ctx context.Context) (*bareServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, bareHTTPArg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &bareServer{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), bareListening); ok {
				select {
				case addr <- a:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case a := <-addr:
		b.url = "http://" + a
		return b, nil
	case <-b.done:
		return nil, fmt.Errorf("bare net/http server exited before listening (%v)", cmd.ProcessState)
	case <-time.After(30 * time.Second):
		b.stop()
		return nil, errors.New("bare net/http server did not say where it listens within 30 s")
	case <-ctx.Done():
		b.stop()
		return nil, ctx.Err()
	}
}

func (b *bareServer) pid() int { return b.cmd.Process.Pid }

// stop ends the bare server (SIGTERM, then SIGKILL after 5 s).
func (b *bareServer) stop() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}
