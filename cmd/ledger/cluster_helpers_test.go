package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/eventstore/natsauth"
	"github.com/sessionledger/ledger/projections"
)

// Helpers for the replica tests: a real 3-node JetStream cluster on
// 127.0.0.1 random ports, ledger instances on it (in-process or as
// subprocesses of the real binary), and convergence checks.

func TestMain(m *testing.M) {
	code := m.Run()
	if ledgerBin.dir != "" {
		os.RemoveAll(ledgerBin.dir)
	}
	os.Exit(code)
}

// testCluster is a 3-node JetStream cluster that admits only nkey
// identities, and the one signing key every ledger on it shares, as in
// production.
type testCluster struct {
	*embedded.Cluster
	ids        *natsauth.Identities
	keyFile    string
	masterFile string // the master key every ledger on it shares
}

// startNATSCluster runs a 3-node JetStream cluster for the test.
func startNATSCluster(t *testing.T) *testCluster {
	t.Helper()
	dir := t.TempDir()
	ids, err := natsauth.LoadOrCreate(filepath.Join(dir, "identities"))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "signing.key")
	if _, err := keyfile.Create(keyFile); err != nil {
		t.Fatal(err)
	}
	masterFile := filepath.Join(dir, "master.key")
	if _, err := keyfile.CreateMasterKey(masterFile); err != nil {
		t.Fatal(err)
	}
	c, err := embedded.StartCluster(embedded.ClusterConfig{Name: "test", Dir: dir, Nodes: 3,
		Users: ids.ServerUsers(eventstore.DefaultStream)})
	if err != nil {
		t.Fatalf("start NATS cluster: %v", err)
	}
	t.Cleanup(c.Shutdown)
	return &testCluster{Cluster: c, ids: ids, keyFile: keyFile, masterFile: masterFile}
}

// onCluster points an instance at the cluster with automatic replicas, as
// the writer identity, with the ledger's signing key.
func onCluster(c *testCluster) option {
	return func(cfg *ServiceConfig) {
		cfg.NATSURL = c.URLs()
		cfg.StreamReplicas = 0
		cfg.NATS = natsauth.ClientConfig{NkeyFile: c.ids.WriterFile}
		cfg.SigningKeyFile = c.keyFile
		cfg.MasterKeyFile = c.masterFile
	}
}

// procArgs are the flags of a ledger process on the cluster.
func (c *testCluster) procArgs(dataDir string) []string {
	privateDir(dataDir)
	return []string{"--nats-url", c.URLs(), "--nats-nkey", c.ids.WriterFile, "--signing-key", c.keyFile, "--master-key-file", c.masterFile, "--data-dir", dataDir, "--min-seq-wait", "20s"} // as testConfig
}

func withMaxLag(d time.Duration) option {
	return func(cfg *ServiceConfig) { cfg.MaxLag = d }
}

func withMinSeqWait(d time.Duration) option {
	return func(cfg *ServiceConfig) { cfg.MinSeqWait = d }
}

func readingMirror(name string) option {
	return func(cfg *ServiceConfig) { cfg.ReadStream = name }
}

// seqFrom is the stream sequence a write answered with; the header and
// the body must agree.
func seqFrom(r response) (uint64, error) {
	h, err := strconv.ParseUint(r.Header.Get("X-Ledger-Seq"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("write response without X-Ledger-Seq: %d %s", r.Status, r.Raw)
	}
	if b, _ := r.get("response", "seq").(float64); uint64(b) != h {
		return 0, fmt.Errorf("X-Ledger-Seq %d but response.seq %v: %s", h, r.get("response", "seq"), r.Raw)
	}
	return h, nil
}

// seqOf is seqFrom for the test goroutine.
func seqOf(t *testing.T, r response) uint64 {
	t.Helper()
	seq, err := seqFrom(r)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func minSeq(seq uint64) map[string]string {
	return map[string]string{"X-Ledger-Min-Seq": strconv.FormatUint(seq, 10)}
}

// converge waits until every instance has applied the whole stream and
// checks that their projections have the same digest.
func converge(t *testing.T, within time.Duration, ls ...*testLedger) string {
	t.Helper()
	var last uint64
	checkFor(t, within, 5*time.Millisecond, func() error {
		seq, err := ls[0].ll.store.LastSeq(context.Background())
		if err != nil {
			return fmt.Errorf("stream last seq: %w", err)
		}
		last = seq
		for i, l := range ls {
			if got := l.proj.Applied(); got != seq {
				return fmt.Errorf("instance %d applied_seq %d, want the stream's last seq %d", i, got, seq)
			}
		}
		return nil
	})
	var want string
	for i, l := range ls {
		d, applied, err := l.proj.DigestAt()
		if err != nil {
			t.Fatalf("digest: %v", err)
		}
		if applied != last {
			t.Fatalf("instance %d moved on to %d while comparing at %d", i, applied, last)
		}
		if i == 0 {
			want = d
		} else if d != want {
			t.Errorf("instance %d digest %s, instance 0 has %s (both at seq %d)", i, d, want, last)
		}
	}
	return want
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// report prints a measurement both to the test log and to stdout, so it
// shows up in a plain `go test` run as well.
func report(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	fmt.Println("replicas:", line)
}

func sortedDurations(ds []time.Duration) []time.Duration {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

// parallelFault marks a test that mostly waits (for NATS nodes to stop,
// elect and restart, for max-lag to pass, for a killed process) as one that
// may run beside another such test: on two cores the suite would otherwise
// spend a minute or more idle. Only tests that touch no process-wide state
// (environment, working directory, flags) may call it.
func parallelFault(t *testing.T) {
	t.Helper()
	t.Parallel()
}

// ledgerBin is the ledger binary, built once per test run for the tests
// that need a real process to kill.
var ledgerBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func buildLedger(t *testing.T) string {
	t.Helper()
	ledgerBin.once.Do(func() {
		ledgerBin.dir, ledgerBin.err = os.MkdirTemp("", "ledger-bin-")
		if ledgerBin.err != nil {
			return
		}
		ledgerBin.path = filepath.Join(ledgerBin.dir, "ledger")
		out, err := exec.Command("go", "build", "-o", ledgerBin.path, ".").CombinedOutput()
		if err != nil {
			ledgerBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if ledgerBin.err != nil {
		t.Fatal(ledgerBin.err)
	}
	return ledgerBin.path
}

// ledgerProc is `ledger serve` running as a child process.
type ledgerProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	url  string
	done chan struct{}
	// lines are the JSON log records, in order.
	mu    sync.Mutex
	lines []map[string]any
}

// startProc runs the ledger binary with args (plus JSON logging and a
// random HTTP port) and waits until it serves.
func startProc(t *testing.T, args ...string) *ledgerProc {
	t.Helper()
	bin := buildLedger(t)
	args = append([]string{"serve", "--http", "127.0.0.1:0", "--log-format", "json", "--log-level", "info"}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "LEDGER_") })
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &ledgerProc{cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ledger: %v", err)
	}
	// The process is a child: its only channel for the address it bound is
	// the "http" attribute of its structured "ledger serving" record.
	served := make(chan any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(slices.Clone(line), '\n'))
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil {
				p.mu.Lock()
				p.lines = append(p.lines, rec)
				p.mu.Unlock()
				if rec["msg"] == "ledger serving" {
					select {
					case served <- rec["http"]:
					default: // never block the reader: it drains the child's stderr
					}
				}
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	select {
	case v := <-served:
		addr, _ := v.(string)
		if addr == "" {
			p.kill()
			t.Fatalf("the ledger serving record has no http address (%v):\n%s", v, p.logs.String())
		}
		p.url = "http://" + addr
	case <-p.done:
		t.Fatalf("ledger exited before serving:\n%s", p.logs.String())
	case <-time.After(60 * time.Second):
		p.kill()
		t.Fatalf("ledger did not serve within 60s:\n%s", p.logs.String())
	}
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *ledgerProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop shuts the process down gracefully (SIGTERM) and waits.
func (p *ledgerProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatalf("ledger did not stop on SIGTERM:\n%s", p.logs.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("ledger exited with %d:\n%s", code, p.logs.String())
	}
}

// logRecord is the first JSON log record with this message.
func (p *ledgerProc) logRecord(msg string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rec := range p.lines {
		if rec["msg"] == msg {
			return rec
		}
	}
	return nil
}

func (p *ledgerProc) do(t *testing.T, method, path, token string, header map[string]string, body any) response {
	t.Helper()
	return doURL(t, p.url, method, path, token, header, body)
}

// offlineDigest opens a stopped instance's projection and digests it.
func offlineDigest(t *testing.T, dataDir string) (string, uint64) {
	t.Helper()
	proj, err := projections.Open(projectionDir(dataDir), domain.NewKeyring(), nil, nil) // reads only
	if err != nil {
		t.Fatalf("open projection: %v", err)
	}
	defer proj.Close()
	d, applied, err := proj.DigestAt()
	if err != nil {
		t.Fatal(err)
	}
	return d, applied
}
