package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is a `ledger serve` child process on a loopback port it picked.
type server struct {
	cmd     *exec.Cmd
	url     string
	catchUp time.Duration // "catching up projection" to "ledger serving"
	startup time.Duration // process start to "ledger serving"
	done    chan struct{}
	log     string
}

// startServer runs the ledger on dataDir, with any extra flags, and returns
// once it serves HTTP, which StartService does only after the projection
// has caught up with the stream.
func startServer(ctx context.Context, bin, dataDir, logPath string, env []string, extra ...string) (*server, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--http", "127.0.0.1:0",
		"--log-format", "json", "--log-level", "info"}, extra...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	s := &server{cmd: cmd, done: make(chan struct{}), log: logPath}
	type serving struct {
		addr    string
		catchUp time.Duration
	}
	ready := make(chan serving, 1)
	go func() {
		defer close(s.done)
		var catchStart time.Time
		copyLines(stderr, logFile, func(line string) {
			var rec struct {
				Time time.Time `json:"time"`
				Msg  string    `json:"msg"`
				HTTP string    `json:"http"`
			}
			if json.Unmarshal([]byte(line), &rec) != nil {
				return
			}
			switch rec.Msg {
			case "catching up projection":
				catchStart = rec.Time
			case "ledger serving":
				var cu time.Duration
				if !catchStart.IsZero() {
					cu = rec.Time.Sub(catchStart)
				}
				select {
				case ready <- serving{rec.HTTP, cu}:
				default:
				}
			}
		})
		_ = cmd.Wait()
		logFile.Close()
	}()
	select {
	case r := <-ready:
		s.url = "http://" + r.addr
		s.catchUp = r.catchUp
		s.startup = time.Since(begin)
	case <-s.done:
		return nil, fmt.Errorf("ledger serve exited before serving (%v); log: %s\n%s", cmd.ProcessState, logPath, tail(logPath, 20))
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	if err := s.waitReady(ctx, 2*time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// waitReady polls /readyz until the projection has applied everything in
// the stream (uses recorded by a touched run included).
func (s *server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ledger not ready after %s (last: %v)", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkNoRejections fails if the server's projection rejected any message
// of its stream (seeded, or appended during the runs): the figures would
// not be those of a ledger the server accepts. /readyz reports rejections
// once there are any.
func (s *server) checkNoRejections() error {
	resp, err := http.Get(s.url + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Rejected float64 `json:"rejected_events"`
		Detail   struct {
			Rejected float64 `json:"rejected_events"`
		} `json:"detail"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("/readyz: %w", err)
	}
	if n := max(body.Rejected, body.Detail.Rejected); n > 0 {
		return fmt.Errorf("the server rejected %.0f messages of its stream; log: %s", n, s.log)
	}
	return nil
}

// stop sends SIGTERM and waits for a graceful exit (SIGKILL after a minute).
func (s *server) stop() *os.ProcessState {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	return s.cmd.ProcessState
}

// procStatus returns VmHWM and VmRSS of pid in bytes.
func procStatus(pid int) (hwm, rss int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmHWM":
			hwm = n << 10
		case "VmRSS":
			rss = n << 10
		}
	}
	if hwm == 0 {
		return 0, 0, errors.New("no VmHWM in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return hwm, rss, nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

const mib = 1 << 20
