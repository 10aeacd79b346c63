package natsauth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// File names of the identities inside the directory given to LoadOrCreate
// (for the ledger: <data-dir>/nats/).
const (
	WriterFileName = "writer.nk"
	ReaderFileName = "reader.nk"
)

// Identities are the NATS identities of an embedded ledger server, kept as
// nkey seed files (mode 0600).
type Identities struct {
	Writer nkeys.KeyPair // what ledger instances connect with: full rights
	Reader nkeys.KeyPair // auditors, consumers in other stacks, the nats CLI: read-only

	WriterFile, ReaderFile string
}

// LoadOrCreate reads dir/writer.nk and dir/reader.nk, creating each one that
// is missing as a new user nkey. The files hold just the seed and a newline,
// the format `nk -gen user` writes, so the nats CLI (--nkey) and nats.go
// (NkeyOptionFromSeed) use them as they are.
func LoadOrCreate(dir string) (*Identities, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats identities: %w", err)
	}
	ids := &Identities{
		WriterFile: filepath.Join(dir, WriterFileName),
		ReaderFile: filepath.Join(dir, ReaderFileName),
	}
	var err error
	if ids.Writer, err = loadOrCreateUser(ids.WriterFile); err != nil {
		return nil, err
	}
	if ids.Reader, err = loadOrCreateUser(ids.ReaderFile); err != nil {
		return nil, err
	}
	wp, _ := ids.Writer.PublicKey()
	rp, _ := ids.Reader.PublicKey()
	if wp == rp {
		// One key in both files would give readers the writer's rights.
		return nil, fmt.Errorf("nats identities: %s and %s hold the same key", ids.WriterFile, ids.ReaderFile)
	}
	return ids, nil
}

func loadOrCreateUser(path string) (nkeys.KeyPair, error) {
	kp, err := ReadSeedFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return kp, err
	}
	if err := createSeedFile(path); err != nil {
		return nil, err
	}
	// Read back what is on disk: if another process created the file first,
	// its key is the one that counts.
	return ReadSeedFile(path)
}

// createSeedFile writes a new user seed so that path either does not exist
// or holds a complete seed: written to a temporary file, synced, then
// linked into place, which fails instead of overwriting an existing key.
func createSeedFile(path string) error {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("create nats identity %s: %w", path, err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("create nats identity %s: %w", path, err)
	}
	defer wipe(seed)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*") // mode 0600
	if err != nil {
		return fmt.Errorf("create nats identity %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(seed) // not append(seed, '\n'): that may copy the seed where wipe cannot reach
	if err == nil {
		_, err = tmp.Write([]byte{'\n'})
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create nats identity %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create nats identity %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // make the new name durable; best effort where unsupported
		d.Close()
	}
	return nil
}

// ReadSeedFile reads a user nkey seed file (a bare seed as `nk -gen user`
// writes it, or a decorated one). A file that group or others may access
// is refused: whoever can read it can act as that identity.
func ReadSeedFile(path string) (nkeys.KeyPair, error) {
	data, err := readPrivateFile(path)
	if err != nil {
		return nil, err
	}
	defer wipe(data)
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		// The nkeys errors never contain the key material.
		return nil, fmt.Errorf("nats identity %s: not a user nkey seed: %w", path, err)
	}
	return kp, nil
}

// readPrivateFile reads a secret file, refusing it when its permissions
// let group or others in.
func readPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nats identity: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("nats identity: %w", err)
	}
	// Windows does not map ACLs onto these bits.
	if perm := st.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("nats identity %s: permissions %04o are too open: group or others may read this secret; run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("nats identity %s: %w", path, err)
	}
	return data, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// ServerUsers are the server.NkeyUser entries for an embedded server or a
// local cluster serving stream (subjects ledger.>): the writer without
// restrictions, the reader with ReaderPermissions(stream). Both are in the
// server's global account, like every anonymous client used to be.
func (ids *Identities) ServerUsers(stream string) []*server.NkeyUser {
	var users []*server.NkeyUser
	// A key without a public key cannot be named to the server; leaving
	// it out refuses it, which is the safe side.
	if pub, err := ids.Writer.PublicKey(); err == nil {
		users = append(users, &server.NkeyUser{Nkey: pub})
	}
	if pub, err := ids.Reader.PublicKey(); err == nil {
		users = append(users, &server.NkeyUser{Nkey: pub, Permissions: ReaderPermissions(stream)})
	}
	return users
}
