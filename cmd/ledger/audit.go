package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/keyfile"
	"github.com/sessionledger/ledger/handlers/httpapi"
	"github.com/sessionledger/ledger/handlers/query"
	"github.com/sessionledger/ledger/projections"
	"golang.org/x/term"
)

// auditCmd groups the auditor's tools. They read the stream directly (a
// stopped server's data dir, or a running cluster through --nats-url) and
// need no HTTP server.
type auditCmd struct {
	Verdict auditVerdictCmd `cmd:"" help:"Recompute a session's verdict at an instant from the log, and explain it."`
	History auditHistoryCmd `cmd:"" help:"Print the events of a user, a session or an email, in order."`
	Export  auditExportCmd  `cmd:"" help:"Write every event as JSON lines to stdout."`
	Verify  auditVerifyCmd  `cmd:"" help:"Re-read the whole stream and check every hash chain (and each standalone use), signature and pinned digest."`
	Digest  auditDigestCmd  `cmd:"" help:"Print the projection's state digest and stream digest checkpoints (stopped server's data dir)."`
}

type auditFlags struct {
	logFlags
	LogLevel string `name:"log-level" default:"warn" enum:"debug,info,warn,error" env:"LEDGER_LOG_LEVEL" help:"Log level."`
	JSON     bool   `name:"json" help:"Machine-readable output."`
}

// run opens the log (a data dir or --nats-url), calls fn with it until
// SIGINT/SIGTERM, and closes it.
func (f auditFlags) run(fn func(ctx context.Context, store *eventstore.Store) error) error {
	return f.runWith(false, false, func(ctx context.Context, src auditSource, _ query.SecretOpener) error { return fn(ctx, src.store) })
}

// runWith is run, with withSecrets the users' data keys too if this machine
// has the master key and the identity may read the bucket (else nil: sealed
// emails show as "(sealed)"). With hint, and a data dir this process
// locked (no --nats-url), the data dir's projection is opened read-only as
// the index of sessions point queries start from (see auditSource).
func (f auditFlags) runWith(hint, withSecrets bool, fn func(ctx context.Context, src auditSource, secrets query.SecretOpener) error) error {
	ctx, stop := signalContext()
	defer stop()
	ll, err := openLog(ctx, f.config(), outputFlags{LogLevel: f.LogLevel, LogFormat: "text"}.logger(), false)
	if err != nil {
		return err
	}
	defer ll.close()
	if err := ll.openStore(ctx, f.config(), false); err != nil {
		return err
	}
	// Judge events with the ledger's keys if this machine has them (MACs),
	// else with the public keys the log introduces (signatures).
	if ring, err := keyfile.LoadRing(signingKeyPath(f.config())); err == nil {
		ll.store.SetVerifier(ring)
	}
	var secrets query.SecretOpener
	if withSecrets {
		if s := secretsForAudit(ctx, ll, f.config()); s != nil {
			secrets = s
		}
	}
	src := auditSource{store: ll.store}
	if hint && f.NATSURL == "" {
		if p, why := openSessionIndex(f.DataDir); p != nil {
			defer p.Close()
			src.index = p
		} else {
			src.noIndex = why
		}
	}
	return fn(ctx, src, secrets)
}

// openSessionIndex opens a stopped data dir's projection read-only, or
// says why it cannot (the data dir is locked by this process already).
func openSessionIndex(dataDir string) (*projections.Projection, string) {
	dir := projectionDir(dataDir)
	if _, err := os.Stat(dir); err != nil {
		return nil, "the data dir has no projection"
	}
	p, err := projections.Open(dir, domain.NewKeyring(), nil, nil, projections.ReadOnly())
	if err != nil {
		return nil, "the projection does not open: " + err.Error()
	}
	return p, ""
}

// auditSource is what the audit commands read: the log, and for point
// queries about a session an index of sessions (a stopped data dir's
// projection). The index is a cache the auditor need not trust: it only
// says which user's subject to read, and the answer comes from that
// subject, checked (query.HintedOwners); without an index, or if the log
// does not confirm it, the whole stream is read, and Warn says so.
type auditSource struct {
	store   *eventstore.Store
	index   sessionIndex // nil: none
	noIndex string       // why there is none, if known
	warn    io.Writer    // fallback notes; nil: os.Stderr
}

// sessionIndex maps a session to its user (projections.Projection does).
type sessionIndex interface {
	UserOfSession(ctx context.Context, sessionID string) (string, error)
}

// handler is the audit queries over the source.
func (s auditSource) handler(secrets query.SecretOpener) query.AuditHandler {
	warn := s.warn
	if warn == nil {
		warn = os.Stderr
	}
	owners := &query.HintedOwners{Log: s.store.Reader, Scan: s.store.Reader,
		Fallback: func(sessionID, why string) {
			if s.index == nil && s.noIndex != "" {
				why = s.noIndex
			}
			fmt.Fprintf(warn, "note: finding the user of session %s by reading the whole stream: %s\n", sessionID, why)
		}}
	if s.index != nil {
		owners.Hint = s.index
	}
	return query.AuditHandler{Owners: owners, Log: owners, Secrets: secrets}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func parseFlagTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return t, fmt.Errorf("--%s %q: want an RFC 3339 time such as 2026-03-03T14:02:00Z", name, v)
	}
	return t.UTC(), nil
}

type auditVerdictCmd struct {
	auditFlags
	Session string `name:"session" required:"" help:"Session id."`
	At      string `name:"at" help:"Instant (RFC 3339); default now."`
}

func (c *auditVerdictCmd) Run() error {
	at, err := parseFlagTime("at", c.At)
	if err != nil {
		return err
	}
	if at.IsZero() {
		at = time.Now().UTC()
	}
	return c.runWith(true, false, func(ctx context.Context, src auditSource, _ query.SecretOpener) error {
		return auditVerdict(ctx, src, c.Session, at, c.JSON, os.Stdout)
	})
}

func auditVerdict(ctx context.Context, src auditSource, sessionID string, at time.Time, asJSON bool, out io.Writer) error {
	res, err := src.handler(nil).SessionAsOf(ctx, sessionID, at)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(out).Encode(httpapi.AsOfJSON(res))
	}
	v := res.Verdict
	verdict := "valid"
	if !v.Valid {
		verdict = "invalid (" + string(v.Reason) + ")"
	}
	fmt.Fprintf(out, "session  %s\nuser     %s\nat       %s\nverdict  %s\nwhy      %s\nevents:\n",
		res.SessionID, res.UserID, at.Format(time.RFC3339), verdict, res.Summary)
	for _, d := range res.Explanation {
		fmt.Fprintf(out, "  #%-6d %-9s %s\n", res.Seqs[d.Event.ID], d.Role, describe(d.Event))
	}
	return nil
}

// windowFlags bound a listing by event time.
type windowFlags struct {
	Since string `name:"since" help:"Only events at or after this instant (RFC 3339)."`
	Until string `name:"until" help:"Only events at or before this instant (RFC 3339)."`
}

func (w windowFlags) window() (since, until time.Time, err error) {
	if since, err = parseFlagTime("since", w.Since); err == nil {
		until, err = parseFlagTime("until", w.Until)
	}
	return since, until, err
}

type auditHistoryCmd struct {
	auditFlags
	windowFlags
	User    string `name:"user" xor:"who" required:"" help:"User id."`
	Session string `name:"session" xor:"who" required:"" help:"Session id (its user's events that concern it)."`
	Email   string `name:"email" xor:"who" required:"" help:"Email address (its claim and its user's events)."`
}

func (c *auditHistoryCmd) Run() error {
	since, until, err := c.window()
	if err != nil {
		return err
	}
	return c.runWith(c.Session != "", true, func(ctx context.Context, src auditSource, secrets query.SecretOpener) error {
		return auditHistory(ctx, src, secrets, c.User, c.Session, c.Email, since, until, c.JSON, os.Stdout)
	})
}

// auditHistory prints events; registrations with their email as
// query.RevealEmail shows it (the email, "(erased)", or "(sealed)" without
// secrets).
func auditHistory(ctx context.Context, src auditSource, secrets query.SecretOpener, userID, sessionID, email string, since, until time.Time, asJSON bool, out io.Writer) error {
	audit := src.handler(secrets)
	var events []eventstore.StoredEvent
	var err error
	switch {
	case email != "":
		events, err = audit.EmailEvents(ctx, email, since, until)
	case sessionID != "":
		events, err = audit.SessionEvents(ctx, sessionID, since, until)
	default:
		events, err = audit.UserEvents(ctx, userID, since, until)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	for _, se := range events {
		var shown string
		if se.Err == nil {
			shown = audit.RevealEmail(ctx, se.Event)
		}
		if asJSON {
			b := httpapi.StoredEventJSON(se)
			b.Email = shown
			if err := enc.Encode(b); err != nil {
				return err
			}
			continue
		}
		if se.Err != nil {
			fmt.Fprintf(out, "#%-6d REJECTED message on %s: %v\n", se.Seq, se.Subject, se.Err)
			continue
		}
		fmt.Fprintf(out, "#%-6d %s\n", se.Seq, describeWith(se.Event, shown))
	}
	return nil
}

// describe is one human-readable line for an event.
func describe(e domain.Event) string { return describeWith(e, "") }

// describeWith is describe, with a registration's email as the audit may
// show it (query.RevealEmail) in place of its sealed form.
func describeWith(e domain.Event, email string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-22s", e.Time.UTC().Format(time.RFC3339), e.Type)
	if e.UserID != "" {
		fmt.Fprintf(&b, " user=%s", e.UserID)
	}
	if e.SessionID != "" {
		fmt.Fprintf(&b, " session=%s", e.SessionID)
	}
	if email != "" {
		fmt.Fprintf(&b, " email=%s", email)
	}
	var payload map[string]any
	dec := json.NewDecoder(bytes.NewReader(e.Payload))
	dec.UseNumber() // 2592000, not 2.592e+06
	_ = dec.Decode(&payload)
	keys := make([]string, 0, len(payload))
	for k := range payload {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if email != "" && (k == "email" || k == "email_sealed") {
			continue
		}
		v := fmt.Sprint(payload[k])
		switch k {
		case "email_sealed":
			v = "(sealed)"
		case "password_hash":
			v = "(argon2id)"
		case "token_hash", "email_hash", "key_hash":
			if len(v) > 19 {
				v = v[:19] + "…"
			}
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	fmt.Fprintf(&b, " id=%s", e.ID)
	return b.String()
}

type auditExportCmd struct {
	auditFlags
	windowFlags
}

func (c *auditExportCmd) Run() error {
	since, until, err := c.window()
	if err != nil {
		return err
	}
	return c.run(func(ctx context.Context, store *eventstore.Store) error {
		return auditExport(ctx, store, since, until, os.Stdout, os.Stderr, term.IsTerminal(int(os.Stderr.Fd())))
	})
}

func auditExport(ctx context.Context, store *eventstore.Store, since, until time.Time, out, status io.Writer, tty bool) error {
	last, err := store.LastSeq(ctx)
	if err != nil {
		return err
	}
	var bar *progressbar.ProgressBar
	if tty {
		bar = progressbar.NewOptions64(int64(last), progressbar.OptionSetWriter(status),
			progressbar.OptionSetDescription("export"), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	w := bufio.NewWriterSize(out, 64<<10)
	enc := json.NewEncoder(w)
	start := time.Now()
	var n uint64
	err = store.History(ctx, "", func(se eventstore.StoredEvent) error {
		if bar != nil {
			_ = bar.Set64(int64(se.Seq))
		}
		if !query.InWindow(se, since, until) {
			return nil
		}
		n++
		return enc.Encode(httpapi.StoredEventJSON(se))
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(status, "exported %d events in %s (%.0f events/s)\n", n, elapsed.Round(time.Millisecond), float64(n)/max(elapsed.Seconds(), 1e-9))
	return nil
}

type auditVerifyCmd struct {
	auditFlags
	Pin         []string `name:"pin" placeholder:"SEQ:DIGEST" help:"A stream digest recorded earlier (from verify or digest output); repeatable."`
	Checkpoints bool     `name:"checkpoints" help:"Also print the stream digest every 1000 sequences, to pin outside the system."`
	PublicKey   string   `name:"public-key" placeholder:"FILE" help:"Public key(s) you trust (PEM, from 'ledger keys public'); the log's key chain must contain one. Default: the public halves of --signing-key or the data dir's signing.key, if readable."`
	// Verify keeps about 200 MiB at 1M subjects but makes garbage at the
	// read's pace, which with GOGC alone doubled its peak RSS (668 MiB at
	// 1.25M events): a soft limit, as serve has, keeps it near the limit
	// at no measured cost in speed.
	MemoryLimitMiB int64 `name:"memory-limit-mib" default:"${default_audit_memory_limit_mib}" env:"LEDGER_AUDIT_MEMORY_LIMIT_MIB" help:"Soft memory limit for the Go runtime (GOMEMLIMIT) during verify, in MiB; the collector works harder near it, never fails for it. Not the server's LEDGER_MEMORY_LIMIT_MIB, which is sized for a flood of password checks. 0: none. An explicit GOMEMLIMIT wins."`
}

func (c *auditVerifyCmd) Run() error {
	applyMemoryLimit(c.MemoryLimitMiB, slog.New(slog.DiscardHandler))
	pins, err := parsePins(c.Pin)
	if err != nil {
		return err
	}
	trusted, err := c.trusted()
	if err != nil {
		return err
	}
	return c.run(func(ctx context.Context, store *eventstore.Store) error {
		return auditVerify(ctx, store, pins, trusted, c.JSON, c.Checkpoints, os.Stdout)
	})
}

// trusted are the keys the log's key chain must be anchored in.
func (c *auditVerifyCmd) trusted() ([]domain.PublicKey, error) {
	if c.PublicKey != "" {
		return keyfile.LoadPublic(c.PublicKey)
	}
	ring, err := keyfile.LoadRing(signingKeyPath(c.config()))
	if err != nil {
		if c.SigningKeyFile != "" {
			return nil, err
		}
		return nil, nil // nothing to anchor in: said in the output
	}
	var out []domain.PublicKey
	for _, k := range ring.Keys() {
		out = append(out, k.Public())
	}
	return out, nil
}

func parsePins(raw []string) (map[uint64]eventstore.StreamDigest, error) {
	pins := map[uint64]eventstore.StreamDigest{}
	for _, p := range raw {
		seqStr, hexStr, ok := strings.Cut(p, ":")
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		d, okDigest := eventstore.ParseStreamDigest(hexStr)
		if !ok || err != nil || !okDigest || seq == 0 {
			return nil, fmt.Errorf("--pin %q: want SEQ:DIGEST, e.g. 1000:3f2a…", p)
		}
		pins[seq] = d
	}
	return pins, nil
}

func auditVerify(ctx context.Context, store *eventstore.Store, pins map[uint64]eventstore.StreamDigest, trusted []domain.PublicKey, asJSON, checkpoints bool, out io.Writer) error {
	rep, err := store.Verify(ctx, eventstore.VerifyOptions{Pins: pins, Trusted: trusted})
	if err != nil {
		return err
	}
	if asJSON {
		cps := make([]map[string]any, 0, len(rep.Checkpoints))
		for _, c := range rep.Checkpoints {
			cps = append(cps, map[string]any{"seq": c.Seq, "stream_digest": c.Digest.String()})
		}
		if err := json.NewEncoder(out).Encode(map[string]any{
			"ok": rep.OK(), "messages": rep.Messages, "subjects": rep.Subjects, "uses": rep.Uses, "last_seq": rep.LastSeq,
			"stream_digest": rep.Digest.String(), "problems": rep.Problems, "checkpoints": cps,
			"signing_keys": keyIDList(rep.Keys), "anchored": rep.Anchored, "signatures_checked": rep.Signatures,
		}); err != nil {
			return err
		}
	} else {
		if checkpoints {
			for _, c := range rep.Checkpoints {
				fmt.Fprintf(out, "checkpoint %d:%s\n", c.Seq, c.Digest)
			}
		}
		if rep.OK() {
			fmt.Fprintf(out, "OK: %d events on %d subjects verified (hashes, chains, signatures by %s); chain head at seq %d: %d:%s\n",
				rep.Messages, rep.Subjects, strings.Join(keyIDList(rep.Keys), " then "), rep.LastSeq, rep.LastSeq, rep.Digest)
			if rep.Uses > 0 {
				fmt.Fprintf(out, "use subjects (ledger.use.<user>): %d events, no chains; each checked on its own (hash, no predecessor, a use of its subject's user, signature)\n", rep.Uses)
			}
			if !rep.Anchored {
				fmt.Fprintln(out, "note: no trusted public key was given (--public-key), so this shows one key signed every event, not whose key it is")
			}
		} else {
			fmt.Fprintf(out, "FAILED: first problem at %s\n", rep.Problems[0])
			for _, p := range rep.Problems[1:] {
				fmt.Fprintf(out, "  also: %s\n", p)
			}
		}
	}
	if !rep.OK() {
		return eventstore.ErrTampered
	}
	return nil
}

type auditDigestCmd struct {
	auditFlags
}

func (c *auditDigestCmd) Run() error {
	return auditDigest(c.DataDir, c.JSON, os.Stdout)
}

func auditDigest(dataDir string, asJSON bool, out io.Writer) error {
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(projectionDir(dataDir)); err != nil {
		return fmt.Errorf("no projection in %s: %w", dataDir, err)
	}
	p, err := projections.Open(projectionDir(dataDir), domain.NewKeyring(), nil, nil) // reads only
	if err != nil {
		return err
	}
	defer p.Close()
	d, err := projectionDigests(p)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(out).Encode(d)
	}
	fmt.Fprintf(out, "applied seq    %d\nstate digest   %s\nstream digest  %s\n", d.AppliedSeq, d.StateDigest, d.StreamDigest)
	if d.RejectedEvents > 0 {
		fmt.Fprintf(out, "rejected       %d messages (see --json)\n", d.RejectedEvents)
	}
	return nil
}

func keyIDList(keys []domain.PublicKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.ID
	}
	return out
}
