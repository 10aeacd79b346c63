package natsauth_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/sessionledger/ledger/eventstore/natsauth"
)

func publicKey(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nats")
	ids, err := natsauth.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ids.WriterFile != filepath.Join(dir, "writer.nk") || ids.ReaderFile != filepath.Join(dir, "reader.nk") {
		t.Errorf("files %s, %s", ids.WriterFile, ids.ReaderFile)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, %v; want 0700", st.Mode().Perm(), err)
	}
	for _, f := range []string{ids.WriterFile, ids.ReaderFile} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", f, st.Mode().Perm())
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// The format `nk -gen user` writes: the user seed and a newline.
		if seed := strings.TrimSuffix(string(data), "\n"); !strings.HasPrefix(seed, "SU") || strings.ContainsAny(seed, "\n ") {
			t.Errorf("%s does not hold just a user seed", f)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want the two seed files", len(entries))
	}
	writer, reader := publicKey(t, ids.Writer), publicKey(t, ids.Reader)
	if !nkeys.IsValidPublicUserKey(writer) || !nkeys.IsValidPublicUserKey(reader) || writer == reader {
		t.Fatalf("keys %s, %s: want two distinct user keys", writer, reader)
	}

	again, err := natsauth.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if publicKey(t, again.Writer) != writer || publicKey(t, again.Reader) != reader {
		t.Error("reloading gave other keys")
	}

	// The server side: writer unrestricted, reader with the reader rights.
	users := ids.ServerUsers("LEDGER")
	if len(users) != 2 || users[0].Nkey != writer || users[0].Permissions != nil ||
		users[1].Nkey != reader || users[1].Permissions == nil ||
		!slices.Equal(users[1].Permissions.Publish.Allow, natsauth.ReaderPermissions("LEDGER").Publish.Allow) {
		t.Errorf("ServerUsers = %+v", users)
	}

	// A seed others can read is refused, as ssh refuses such a key.
	if err := os.Chmod(ids.ReaderFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = natsauth.LoadOrCreate(dir)
	if err == nil || !strings.Contains(err.Error(), "too open") || !strings.Contains(err.Error(), "reader.nk") {
		t.Errorf("0644 seed file: %v, want a refusal naming the file", err)
	}
	if _, err := natsauth.ReadSeedFile(ids.ReaderFile); err == nil {
		t.Error("ReadSeedFile accepted a 0644 file")
	}
	if err := os.Chmod(ids.ReaderFile, 0o600); err != nil {
		t.Fatal(err)
	}

	// A file that is not a user seed is not replaced, it is an error.
	if err := os.WriteFile(ids.WriterFile, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := natsauth.LoadOrCreate(dir); err == nil || !strings.Contains(err.Error(), "writer.nk") {
		t.Errorf("garbage seed file: %v", err)
	} else if strings.Contains(err.Error(), "not a seed") {
		t.Errorf("error repeats the file's content: %v", err)
	}
}

// A missing file is created next to an existing one, which is kept.
func TestLoadOrCreateKeepsExisting(t *testing.T) {
	dir := t.TempDir()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "writer.nk"), append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	ids, err := natsauth.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if publicKey(t, ids.Writer) != publicKey(t, kp) {
		t.Error("the existing writer key was not used")
	}
	if _, err := os.Stat(filepath.Join(dir, "reader.nk")); err != nil {
		t.Error(err)
	}
}
