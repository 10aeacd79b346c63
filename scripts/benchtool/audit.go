package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/handlers/query"
	"github.com/sessionledger/ledger/projections"
)

// pointQueries is how many sessions the point-query figure asks about.
const pointQueries = 20

// pointQueryBench times an auditor's point query, `ledger audit verdict
// --session`, on the large data set with the server stopped, after the
// rebuild built its projection: the query finds the session's user through
// the projection (read-only) and reads that user's subject and the key
// subject, never the whole stream. Two figures: the query itself (in this
// process: query.HintedOwners and SessionAsOf over the data dir, as the
// command runs them) against the 50 ms goal, and the whole command (a
// process that starts the embedded NATS server on the data dir first),
// informational. Sessions are spread over the token pool; none may need
// the fallback scan. One scan (the former way) is timed for the note.
func (r *runner) pointQueryBench(ctx context.Context, ds *dataset) error {
	sessions, err := spreadSessions(ds.poolFile, pointQueries)
	if err != nil {
		return err
	}
	// The whole command, as an auditor runs it.
	var cli []time.Duration
	for _, sid := range sessions[:min(5, len(sessions))] {
		cmd := exec.CommandContext(ctx, r.ledger, "audit", "verdict", "--session", sid, "--data-dir", ds.dir, "--json")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("ledger audit verdict --session %s: %w\n%s", sid, err, stderr.Bytes())
		}
		cli = append(cli, time.Since(start))
		if strings.Contains(stderr.String(), "whole stream") || !strings.Contains(stdout.String(), sid) {
			return fmt.Errorf("ledger audit verdict --session %s did not answer from the projection's hint:\n%s%s", sid, stdout.Bytes(), stderr.Bytes())
		}
	}

	// The query alone.
	emb, nc, err := startNATS(filepath.Join(ds.dir, "nats"), "bench-point", false)
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	defer nc.Close()
	store, err := eventstore.Open(ctx, nc, eventstore.Config{})
	if err != nil {
		return err
	}
	if ring, err := keyfile.LoadRing(ds.keyFile); err == nil {
		store.SetVerifier(ring)
	}
	openStart := time.Now()
	proj, err := projections.Open(filepath.Join(ds.dir, "projection"), domain.NewKeyring(), nil, nil, projections.ReadOnly())
	if err != nil {
		return fmt.Errorf("open the projection read-only: %w", err)
	}
	defer proj.Close()
	openTook := time.Since(openStart)
	var fallbacks int
	var took []time.Duration
	now := time.Now()
	for _, sid := range sessions {
		owners := &query.HintedOwners{Hint: proj, Log: store.Reader, Scan: store.Reader,
			Fallback: func(string, string) { fallbacks++ }}
		start := time.Now()
		res, err := query.AuditHandler{Owners: owners, Log: owners}.SessionAsOf(ctx, sid, now)
		if err != nil {
			return fmt.Errorf("point query %s: %w", sid, err)
		}
		took = append(took, time.Since(start))
		if res.SessionID != sid {
			return fmt.Errorf("point query %s answered for %s", sid, res.SessionID)
		}
	}
	if fallbacks > 0 {
		return fmt.Errorf("%d of %d point queries fell back to scanning the stream", fallbacks, len(sessions))
	}
	// The former way, once: find the user by reading the stream.
	scanStart := time.Now()
	if _, err := store.Reader.UserOfSession(ctx, sessions[len(sessions)-1]); err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	scan := time.Since(scanStart)

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	slices.Sort(took)
	slices.Sort(cli)
	f := maxFigure("audit_point_query", fmt.Sprintf("audit point query (verdict --session: projection hint, then the user's checked subject; %s sessions, data dir stopped), slowest of %d",
		human(ds.sessions), len(took)), "ms", ms(took[len(took)-1]), 50)
	f.Note = fmt.Sprintf("median %.1f ms; finding the user by reading the stream instead: %.0f ms; the whole command %.0f–%.0f ms (process, embedded NATS start, Pebble open %.0f ms)",
		ms(took[len(took)/2]), ms(scan), ms(cli[0]), ms(cli[len(cli)-1]), ms(openTook))
	r.add(withDetail(f, map[string]any{"queries": len(took), "median_ms": ms(took[len(took)/2]), "max_ms": ms(took[len(took)-1]),
		"scan_ms": ms(scan), "cli_min_ms": ms(cli[0]), "cli_max_ms": ms(cli[len(cli)-1]), "projection_open_ms": ms(openTook)}))
	cf := maxFigure("audit_point_query_cli", fmt.Sprintf("ledger audit verdict --session, whole command (%s sessions, data dir stopped), slowest of %d", human(ds.sessions), len(cli)),
		"ms", ms(cli[len(cli)-1]), 0)
	cf.Note = "includes the process start and the embedded NATS server recovering the data dir's stream"
	r.add(cf)
	return nil
}

// spreadSessions are n session ids spread evenly over a token pool file.
func spreadSessions(poolFile string, n int) ([]string, error) {
	f, err := os.Open(poolFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var all []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sid, _, err := domain.ParseToken(strings.TrimSpace(sc.Text())); err == nil {
			all = append(all, sid)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%s holds no tokens", poolFile)
	}
	out := make([]string, 0, n)
	for i := range min(n, len(all)) {
		out = append(out, all[i*len(all)/min(n, len(all))])
	}
	return out, nil
}

// verifyRSSBench runs `ledger audit verify` on the large data set (server
// stopped) and reports its peak RSS (VmHWM, polled until it exits) and its
// whole-command rate: the check's memory no longer grows with the number
// of events (it keeps the last hash of each subject).
func (r *runner) verifyRSSBench(ctx context.Context, ds *dataset) error {
	cmd := exec.CommandContext(ctx, r.ledger, "audit", "verify", "--data-dir", ds.dir, "--log-level", "warn")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	hwm, waitErr := waitPeakRSS(cmd, 50*time.Millisecond)
	took := time.Since(start)
	if waitErr != nil || !strings.HasPrefix(out.String(), "OK:") {
		return fmt.Errorf("ledger audit verify: %v\n%s", waitErr, out.Bytes())
	}
	f := maxFigure("verify_rss", fmt.Sprintf("ledger audit verify peak RSS (%d events, data dir stopped)", ds.events), "MiB", float64(hwm)/mib, 0)
	f.Note = fmt.Sprintf("the whole command %.1f s (%.0f events/s, with the embedded NATS start)", took.Seconds(), float64(ds.events)/took.Seconds())
	r.add(withDetail(f, map[string]any{"vmhwm_mib": float64(hwm) / mib, "seconds": took.Seconds(), "events": ds.events}))
	return nil
}
