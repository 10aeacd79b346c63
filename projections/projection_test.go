package projections_test

import (
	"bytes"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/eventstoretest"
	"github.com/sessionledger/ledger/projections"
)

var t0 = time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)

// history builds the stored records of one user after the key
// introduction: registration, two sessions, a use and a logout of the
// first, each sealed into the chain and signed.
func history(t *testing.T) (log *eventstoretest.Log, sids []string) {
	t.Helper()
	log = eventstoretest.NewLog(t, eventstoretest.Key(t, 1), t0)
	subject := eventstore.UserSubject("u1")
	u := domain.NewUser("u1", "a@example.com", "hash", nil)
	reg, err := domain.Register("u1", "a@example.com", "v1.sealed", "hash", t0)
	if err != nil {
		t.Fatal(err)
	}
	log.Add(t, subject, reg)
	for i := range 2 {
		_, sid, h, err := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{byte(i + 1)}, 64)))
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, sid)
		log.Add(t, subject, u.StartSession(sid, h, "password", true, false, t0, domain.DefaultPolicy()))
	}
	log.Add(t, subject, domain.SessionUse("u1", sids[0], t0.Add(48*time.Hour)))
	log.Add(t, subject, logout("u1", sids[1], t0.Add(72*time.Hour)))
	return log, sids
}

func logout(userID, sessionID string, at time.Time) domain.Event {
	return domain.Event{Type: domain.EventSessionLoggedOut, UserID: userID, SessionID: sessionID,
		Time: at, SchemaVersion: domain.SchemaVersion, Payload: []byte(`{}`)}
}

func open(t *testing.T, dir string, ring *domain.Keyring) *projections.Projection {
	t.Helper()
	p, err := projections.Open(dir, ring, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplyIsIdempotentAndResumable(t *testing.T) {
	dir := t.TempDir()
	log, sids := history(t)
	recs := log.Recs
	p := open(t, dir, log.Ring())
	if err := p.ApplyBatch(recs[:3]); err != nil {
		t.Fatal(err)
	}
	// Redelivery of everything, overlapping what was applied.
	if err := p.ApplyBatch(recs); err != nil {
		t.Fatal(err)
	}
	once, applied, err := p.DigestAt()
	if err != nil || applied != 6 {
		t.Fatalf("digest %v at %d", err, applied)
	}
	if err := p.ApplyBatch(recs); err != nil {
		t.Fatal(err)
	}
	if twice, _ := p.Digest(); twice != once {
		t.Fatal("re-applying applied records changed the projection")
	}
	s, err := p.Session(sids[0])
	if err != nil {
		t.Fatal(err)
	}
	if !s.LastUseAt().Equal(t0.Add(48 * time.Hour)) {
		t.Errorf("last use %s", s.LastUseAt())
	}
	if v := mustSession(t, p, sids[1]).Verdict(t0.Add(73 * time.Hour)); v.Reason != domain.ReasonRevokedLogout {
		t.Errorf("logged-out session: %+v", v)
	}
	u, version, err := p.LoadUser("u1")
	if err != nil || u == nil || version.Seq != 6 || version.Head != log.Head(eventstore.UserSubject("u1")) || !version.Time.Equal(t0.Add(72*time.Hour)) {
		t.Fatalf("LoadUser = %v %+v %v", u, version, err)
	}
	if uid, hash, err := p.Credentials("a@example.com"); err != nil || uid != "u1" || hash != "hash" {
		t.Fatalf("Credentials = %q %q %v", uid, hash, err)
	}
	if _, _, err := p.Credentials("b@example.com"); !errors.Is(err, domain.ErrUserNotFound) {
		t.Fatalf("unknown email: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened, it resumes at its checkpoint with the same state.
	p = open(t, dir, log.Ring())
	defer p.Close()
	if k, err := p.SigningKey(); err != nil || k.ID() != log.Key.ID() {
		t.Fatalf("key in force after reopen: %v %v", k.ID(), err)
	}
	if p.Applied() != 6 {
		t.Fatalf("checkpoint after reopen = %d", p.Applied())
	}
	if again, _ := p.Digest(); again != once {
		t.Fatal("state changed across close and reopen")
	}

	// A rebuild into a fresh dir from the same records matches exactly.
	q := open(t, t.TempDir(), log.Ring())
	defer q.Close()
	for _, r := range recs {
		if err := q.ApplyBatch([]eventstore.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if one, _ := q.Digest(); one != once {
		t.Fatal("applying one by one differs from applying in batches")
	}
}

// TestUntrustworthyMessagesAreRejected: messages that are not the
// ledger's are recorded with their reason and passed over; none changes
// state or becomes its subject's head, so the user's next legitimate event
// still links and applies.
func TestUntrustworthyMessagesAreRejected(t *testing.T) {
	log, sids := history(t)
	subject := eventstore.UserSubject("u1")
	forger := eventstoretest.Key(t, 9)
	// A forged logout of the live session, correctly chained and hashed,
	// signed by someone without the ledger's key.
	forged := log.AddSigned(t, subject, logout("u1", sids[0], t0.Add(73*time.Hour)), forger)
	log.Raw(subject, []byte("{not json"), t0)
	// A logout whose hash does not match its content.
	wrongHash := logout("u1", sids[0], t0.Add(73*time.Hour))
	wrongHash.ID, wrongHash.PrevHash, wrongHash.Hash = "wrong-hash", log.Head(subject), "sha256:00"
	data, _ := wrongHash.Encode()
	log.Raw(subject, data, t0)
	// A genuine event replayed: signed, but it links to an older head.
	log.Raw(subject, log.Recs[4].Data, t0)
	// The user's next legitimate event.
	later := log.Add(t, subject, domain.SessionUse("u1", sids[0], t0.Add(74*time.Hour)))

	p := open(t, t.TempDir(), log.Ring())
	defer p.Close()
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	if p.Applied() != later.Seq {
		t.Fatalf("applied %d, want %d: rejections must not stop the projection", p.Applied(), later.Seq)
	}
	if s := mustSession(t, p, sids[0]); !s.Current(t0.Add(75*time.Hour)).Valid || !s.LastUseAt().Equal(t0.Add(74*time.Hour)) {
		t.Fatalf("session after forged logout and later use: %+v, last use %s", s.Current(t0.Add(75*time.Hour)), s.LastUseAt())
	}
	rejected, total, err := p.Rejected(0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{forged.Seq: projections.RejectSignature, forged.Seq + 1: projections.RejectDecode,
		forged.Seq + 2: projections.RejectHash, forged.Seq + 3: projections.RejectChain}
	if total != 4 || len(rejected) != 4 {
		t.Fatalf("rejected %d (%v), want 4", total, rejected)
	}
	for _, r := range rejected {
		if want[r.Seq] != r.Reason || r.Detail == "" || r.Subject != subject {
			t.Errorf("rejected %+v, want reason %q", r, want[r.Seq])
		}
	}
	if newest, _, _ := p.Rejected(1); len(newest) != 1 || newest[0].Seq != forged.Seq+3 {
		t.Errorf("Rejected(1) = %+v, want the newest", newest)
	}
	v, err := p.UserVersion("u1")
	if err != nil || v.Seq != later.Seq || v.Head != log.Head(subject) {
		t.Fatalf("version %+v %v: seq must be the subject's last message, head its last authentic event", v, err)
	}
}

// TestNothingIsAuthenticBeforeTheKeyIntroduction: a log that does not start
// with the introduction of a key this instance holds applies nothing.
func TestNothingIsAuthenticBeforeTheKeyIntroduction(t *testing.T) {
	log, _ := history(t)
	p := open(t, t.TempDir(), log.Ring())
	defer p.Close()
	if err := p.ApplyBatch(append([]eventstore.Record{{Seq: 1, Subject: "ledger.keys", Data: []byte("x")}}, renumber(log.Recs[1:], 2)...)); err != nil {
		t.Fatal(err)
	}
	if _, total, _ := p.Rejected(0); total != uint64(len(log.Recs)) {
		t.Fatalf("rejected %d of %d", total, len(log.Recs))
	}
	if _, err := p.SigningKey(); !errors.Is(err, domain.ErrKeyUnavailable) {
		t.Fatalf("SigningKey with no key introduced: %v", err)
	}
}

func renumber(recs []eventstore.Record, from uint64) []eventstore.Record {
	out := make([]eventstore.Record, len(recs))
	for i, r := range recs {
		r.Seq = from + uint64(i)
		out[i] = r
	}
	return out
}

// TestGapBlocksInsteadOfSkipping: a missing sequence means the stream lost
// a message; the projection stays before it rather than pass it.
func TestGapBlocksInsteadOfSkipping(t *testing.T) {
	log, _ := history(t)
	p := open(t, t.TempDir(), log.Ring())
	defer p.Close()
	recs := append(append([]eventstore.Record(nil), log.Recs[:3]...), log.Recs[4:]...)
	err := p.ApplyBatch(recs)
	if !errors.Is(err, projections.ErrBlocked) || !errors.Is(err, eventstore.ErrStreamTampered) || p.Applied() != 3 {
		t.Fatalf("apply over a gap: err %v, applied %d; want blocked at 3", err, p.Applied())
	}
	if p.Blocked() == nil {
		t.Fatal("Blocked() does not say why")
	}
	if err := p.ApplyBatch(log.Recs); err != nil || p.Applied() != 6 || p.Blocked() != nil {
		t.Fatalf("with the message back: %v, applied %d, blocked %v", err, p.Applied(), p.Blocked())
	}
}

// TestKeyNotHeldBlocksUntilGiven: after a rotation to a key this instance
// was not given, it neither applies nor rejects the new key's events; with
// the key it goes on.
func TestKeyNotHeldBlocksUntilGiven(t *testing.T) {
	log, sids := history(t)
	old := log.Key
	next := eventstoretest.Key(t, 2)
	log.Rotate(t, next, t0.Add(80*time.Hour))
	log.Add(t, eventstore.UserSubject("u1"), logout("u1", sids[0], t0.Add(81*time.Hour)))
	dir := t.TempDir()
	p := open(t, dir, domain.NewKeyring(old))
	err := p.ApplyBatch(log.Recs)
	if !errors.Is(err, domain.ErrKeyUnavailable) || p.Applied() != 7 {
		t.Fatalf("err %v, applied %d; want blocked after the rotation (7)", err, p.Applied())
	}
	if _, total, _ := p.Rejected(0); total != 0 {
		t.Fatalf("%d rejected: an event under a key not held must not be rejected", total)
	}
	if _, err := p.SigningKey(); !errors.Is(err, domain.ErrKeyUnavailable) {
		t.Fatalf("SigningKey: %v, want ErrKeyUnavailable (the new key is in force)", err)
	}
	p.Close()
	p = open(t, dir, domain.NewKeyring(old, next))
	defer p.Close()
	if err := p.ApplyBatch(log.Recs); err != nil || p.Applied() != 8 {
		t.Fatalf("with the key: %v, applied %d", err, p.Applied())
	}
	if v := mustSession(t, p, sids[0]).Current(t0); v.Reason != domain.ReasonRevokedLogout {
		t.Fatalf("logout under the new key: %+v", v)
	}
	// The retired key signs nothing any more.
	log.AddSigned(t, eventstore.UserSubject("u1"), domain.SessionUse("u1", sids[1], t0.Add(82*time.Hour)), old)
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := p.Rejected(1); len(r) != 1 || r[0].Reason != projections.RejectSignature {
		t.Fatalf("event under the retired key: %+v, want rejected (signature)", r)
	}
}

func mustSession(t *testing.T, p *projections.Projection, id string) *domain.Session {
	t.Helper()
	s, err := p.Session(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTimesBeyond2262 guards against storing times as UnixNano, which
// overflows in April 2262.
func TestTimesBeyond2262(t *testing.T) {
	log := eventstoretest.NewLog(t, eventstoretest.Key(t, 1), t0)
	p := open(t, t.TempDir(), log.Ring())
	defer p.Close()
	far := time.Date(2300, 1, 2, 3, 4, 5, 6, time.UTC)
	u := domain.NewUser("u9", "far@example.com", "hash", nil)
	_, sid, h, _ := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
	log.Add(t, eventstore.UserSubject("u9"), u.StartSession(sid, h, "password", true, false, far, domain.DefaultPolicy()))
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	s := mustSession(t, p, sid)
	if !s.StartedAt().Equal(far) || !s.Verdict(far.Add(time.Hour)).Valid {
		t.Fatalf("started %s, verdict %+v", s.StartedAt(), s.Verdict(far.Add(time.Hour)))
	}
}

// TestCachedSessionsNeverGoStale: readers hammer a session while batches
// update it; once ApplyBatch has returned, no read may show older state.
func TestCachedSessionsNeverGoStale(t *testing.T) {
	log, sids := history(t)
	p := open(t, t.TempDir(), log.Ring())
	defer p.Close()
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	subject := eventstore.UserSubject("u1")
	stop := make(chan struct{})
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
					_, _ = p.Session(sids[0])
				}
			}
		}()
	}
	for i := 1; i <= 300; i++ {
		at := t0.Add(48*time.Hour + time.Duration(i)*time.Minute)
		r := log.Add(t, subject, domain.SessionUse("u1", sids[0], at))
		if err := p.ApplyBatch([]eventstore.Record{r}); err != nil {
			t.Fatal(err)
		}
		if got := mustSession(t, p, sids[0]).LastUseAt(); !got.Equal(at) {
			close(stop)
			t.Fatalf("after applying use %d at %s, read last use %s", i, at, got)
		}
	}
	close(stop)
	for range 4 {
		<-done
	}
}

// TestStorageErrorIsRetriedNeverSkipped: a read error while applying a
// logout fails the batch without moving the checkpoint and without
// recording the event as rejected; once storage answers again, the same
// logout applies. (A skipped revocation would be lost for good.)
func TestStorageErrorIsRetriedNeverSkipped(t *testing.T) {
	log, sids := history(t)
	dir := t.TempDir()
	var failing atomic.Bool
	faulty := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		read := op.Kind == errorfs.OpOpen || op.Kind == errorfs.OpFileRead || op.Kind == errorfs.OpFileReadAt
		if failing.Load() && read && strings.HasSuffix(op.Path, ".sst") {
			return errors.New("injected read error")
		}
		return nil
	}))
	// Without a WAL to replay and without a block cache, what Close flushes
	// is read back from sstables only, through the faulty file system.
	cache := pebble.NewCache(1)
	defer cache.Unref()
	opt := func(o *pebble.Options) { o.FS, o.DisableWAL, o.Cache = faulty, true, cache }
	p, err := projections.Open(dir, log.Ring(), nil, nil, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p, err = projections.Open(dir, log.Ring(), nil, nil, opt); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	applied := p.Applied()
	r := log.Add(t, eventstore.UserSubject("u1"), logout("u1", sids[0], t0.Add(90*time.Hour)))
	failing.Store(true)
	if err := p.ApplyBatch([]eventstore.Record{r}); err == nil {
		t.Fatal("apply with storage failing succeeded")
	}
	if p.Applied() != applied {
		t.Fatalf("checkpoint moved to %d past an event it could not apply", p.Applied())
	}
	if _, total, _ := p.Rejected(0); total != 0 {
		t.Fatalf("%d rejected: a storage error is no verdict on the event", total)
	}
	failing.Store(false)
	if err := p.ApplyBatch([]eventstore.Record{r}); err != nil {
		t.Fatal(err)
	}
	if v := mustSession(t, p, sids[0]).Current(t0); v.Reason != domain.ReasonRevokedLogout {
		t.Fatalf("logout after storage recovered: %+v", v)
	}
}

// TestCachedSessionsTakeTheirWrites: a batch that writes a cached session
// leaves it cached with the state it committed (validate's next read then
// costs no Pebble read), and a session the cache does not hold stays out.
// Within a batch, an event after another one of the same session folds on
// the batch's state, not on the committed state the cache holds: a use
// after a logout in one batch leaves the session logged out.
func TestCachedSessionsTakeTheirWrites(t *testing.T) {
	log, sids := history(t)
	p := open(t, t.TempDir(), log.Ring())
	defer p.Close()
	if err := p.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	used, other := sids[0], sids[1]
	mustSession(t, p, used) // cached by the read
	subject := eventstore.UserSubject("u1")
	at := t0.Add(60 * time.Hour)
	r := log.Add(t, subject, domain.SessionUse("u1", used, at))
	if err := p.ApplyBatch([]eventstore.Record{r}); err != nil {
		t.Fatal(err)
	}
	if !p.InSessionCache(used) {
		t.Fatal("a cached session left the cache when a use of it was applied")
	}
	if p.InSessionCache(other) {
		t.Fatal("a session nobody read is cached")
	}
	s, err := p.SessionState(used)
	if err != nil || !s.LastUseAt().Equal(at) {
		t.Fatalf("after the use at %s, the cache answers last use %s (%v)", at, s.LastUseAt(), err)
	}
	first := len(log.Recs)
	log.Add(t, subject, logout("u1", used, at.Add(time.Hour)))
	log.Add(t, subject, domain.SessionUse("u1", used, at.Add(2*time.Hour)))
	if err := p.ApplyBatch(log.Recs[first:]); err != nil {
		t.Fatal(err)
	}
	s, err = p.SessionState(used)
	if err != nil || s.Snapshot().RevokedBy != domain.ReasonRevokedLogout || !s.LastUseAt().Equal(at) {
		t.Fatalf("logout then use in one batch: %+v, %v", s.Snapshot(), err)
	}
	fresh := open(t, t.TempDir(), log.Ring()) // nothing cached: Pebble only
	defer fresh.Close()
	if err := fresh.ApplyBatch(log.Recs); err != nil {
		t.Fatal(err)
	}
	if want := mustSession(t, fresh, used).Snapshot(); want != s.Snapshot() {
		t.Fatalf("cached projection holds %+v, a fresh one %+v", s.Snapshot(), want)
	}
}
