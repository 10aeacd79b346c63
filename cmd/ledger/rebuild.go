package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/projections"
)

// rebuild drops the projection and replays the whole stream into a fresh
// one, printing progress to out. Every event is checked as live, so the key
// ring is needed; a stream that lost events is refused.
func rebuild(ctx context.Context, cfg LogConfig, out io.Writer, log *slog.Logger) error {
	ll, err := openLog(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer ll.close()
	ring, err := keyfile.LoadRing(signingKeyPath(cfg))
	if err != nil {
		return err
	}
	if err := ll.openStore(ctx, cfg, false); err != nil {
		if errors.Is(err, eventstore.ErrStreamMissing) {
			return errLedgerLost(streamName(cfg), 0, err)
		}
		return err
	}
	return rebuildProjection(ctx, ll, cfg, ring, out, log)
}

// rebuildBlockCache is Pebble's block cache during a rebuild: the fold's
// reads are nearly all answered by the rebuild's filter and cache
// (projections.Rebuild), so blocks are seldom read back.
const rebuildBlockCache = 16 << 20

// rebuildProjection is rebuild on an open log (its store opened): `ledger
// rebuild`, and a start that finds a projection of an older key layout.
func rebuildProjection(ctx context.Context, ll *ledgerLog, cfg LogConfig, ring *domain.Keyring, out io.Writer, log *slog.Logger) error {
	findings, _, err := ll.read.CheckStream(ctx, eventstore.StreamExpectations{})
	if err != nil {
		return err
	}
	if len(findings) > 0 {
		return errLedgerLost(streamName(cfg), 0, errors.New(strings.Join(findings, "; ")))
	}
	dir := projectionDir(cfg.DataDir)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("drop projection: %w", err)
	}
	proj, err := projections.Open(dir, ring, log, nil, projections.WithBlockCache(rebuildBlockCache), projections.ForRebuild())
	if err != nil {
		return err
	}
	start := time.Now()
	lastPrint := time.Time{}
	err = proj.Rebuild(ctx, ll.read, func(applied, target uint64) {
		if time.Since(lastPrint) < 500*time.Millisecond && applied < target {
			return
		}
		lastPrint = time.Now()
		pct := 100.0
		if target > 0 {
			pct = 100 * float64(applied) / float64(target)
		}
		fmt.Fprintf(out, "rebuild: %d/%d events (%.1f%%)\n", applied, target, pct)
	})
	if err != nil {
		proj.Close()
		if errors.Is(err, eventstore.ErrStreamTampered) {
			return errLedgerLost(streamName(cfg), proj.Applied(), err)
		}
		return fmt.Errorf("rebuild: %w", err)
	}
	elapsed := time.Since(start)
	applied := proj.Applied()
	digest, derr := proj.Digest()
	_, rejected, rerr := proj.Rejected(1)
	if err := errors.Join(derr, rerr, proj.Close()); err != nil {
		return err
	}
	rate := float64(applied) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(out, "rebuild: done, %d events in %s (%.0f events/s), every one checked (hash, chain, MAC)\n", applied, elapsed.Round(time.Millisecond), rate)
	if rejected > 0 {
		fmt.Fprintf(out, "rebuild: %d messages rejected (see ledger audit verify)\n", rejected)
	}
	fmt.Fprintf(out, "rebuild: state digest %s at seq %d\n", digest, applied)
	return nil
}
