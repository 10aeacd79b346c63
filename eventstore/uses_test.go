package eventstore_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/handlers/ports"
)

// TestRecordUsesStandsAlone: uses go to the user's use subject, each a
// chain root published without an expected sequence, so interleaving with
// the user's own appends never conflicts; the user's history merges both
// subjects in stream order, judged by either verifier, and verify counts
// the uses apart from the chains.
func TestRecordUsesStandsAlone(t *testing.T) {
	store, nc := startStore(t)
	ctx := context.Background()
	sid := strings.Repeat("b", 32)
	_, _, hash, _ := domain.NewToken(bytes.NewReader(bytes.Repeat([]byte{2}, 64)))
	start := domain.NewUser("u8", "u8@example.com", "h", nil).StartSession(sid, hash, "password", true, false, at, domain.DefaultPolicy())
	start.ID = "start"
	v, err := store.AppendUser(ctx, "u8", eventstore.Version{}, start)
	if err != nil {
		t.Fatal(err)
	}
	facts := []ports.Fact{{Event: use("u8", sid, 1)}, {Event: use("u8", sid, 2), DedupKey: "bucket"}, {Event: use("u8", sid, 3), DedupKey: "bucket"}}
	if n, err := store.RecordUses(ctx, facts); err != nil || n != 3 {
		t.Fatalf("RecordUses = %d %v", n, err)
	}
	if _, err := store.RecordUses(ctx, []ports.Fact{{Event: domain.TallyUnknownEmailLogins(domain.LoginFailuresTallied{})}}); err == nil {
		t.Error("RecordUses took something other than a use")
	}
	// A batch with one fact refused stores the others and says so.
	mixed := []ports.Fact{{Event: use("u8", sid, 4)}, {Event: domain.TallyUnknownEmailLogins(domain.LoginFailuresTallied{})}, {Event: use("u8", sid, 5)}}
	if n, err := store.RecordUses(ctx, mixed); err == nil || n != 2 {
		t.Errorf("a batch with one refused fact: RecordUses = %d %v, want 2 and an error", n, err)
	}
	// The user's subject did not move: an append at its version still lands.
	logout := domain.SessionUse("u8", sid, at.Add(time.Hour))
	logout.Type, logout.ID = domain.EventSessionLoggedOut, "logout"
	if _, err := store.AppendUser(ctx, "u8", v, logout); err != nil {
		t.Fatalf("append at the user's version after uses: %v", err)
	}
	js, _ := jetstream.New(nc)
	stream, _ := js.Stream(ctx, eventstore.DefaultStream)
	m, err := stream.GetLastMsgForSubject(ctx, eventstore.UseSubject("u8"))
	if err != nil || m.Header.Get(jetstream.ExpectedLastSubjSeqHeader) != "" {
		t.Fatalf("last use: %v, headers %v", err, m.Header)
	}
	for name, verifier := range map[string]domain.Verifier{"keyring": domain.NewKeyring(testKey), "public keys": nil} {
		r := eventstore.NewReader(store.Stream())
		r.SetVerifier(verifier)
		history, err := r.UserHistory(ctx, "u8")
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for i, se := range history {
			if se.Err != nil || (i > 0 && se.Seq <= history[i-1].Seq) {
				t.Fatalf("%s: message %d: %+v", name, i, se)
			}
			if se.Event.Type == domain.EventSessionUsed && (se.Subject != eventstore.UseSubject("u8") || se.Event.PrevHash != "") {
				t.Errorf("%s: use %+v on %s", name, se.Event, se.Subject)
			}
			types = append(types, string(se.Event.Type))
		}
		if got := strings.Join(types, " "); got != "session_started session_used session_used session_used session_used session_logged_out" {
			t.Errorf("%s: history %s (the duplicate dedupe key stored once)", name, got)
		}
	}
	rep, err := store.Verify(ctx, eventstore.VerifyOptions{Trusted: []domain.PublicKey{testKey.Public()}})
	if err != nil || !rep.OK() || rep.Uses != 4 || rep.Subjects != 2 {
		t.Fatalf("verify: %+v uses %d subjects %d %v", rep.Problems, rep.Uses, rep.Subjects, err)
	}
}
