package natsauth_test

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/sessionledger/ledger/eventstore/natsauth"
)

func TestClientConfigValidate(t *testing.T) {
	dir := t.TempDir()
	ids, err := natsauth.LoadOrCreate(filepath.Join(dir, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	pki := newTestPKI(t, filepath.Join(dir, "pki"))
	creds := writeCreds(t, dir, "user.creds", 0)
	expired := writeCreds(t, dir, "expired.creds", time.Now().Add(-time.Hour).Unix())

	openSeed := filepath.Join(dir, "open.nk")
	seed, _ := os.ReadFile(ids.ReaderFile)
	if err := os.WriteFile(openSeed, seed, 0o644); err != nil {
		t.Fatal(err)
	}
	accountSeed := filepath.Join(dir, "account.nk")
	akp, _ := nkeys.CreateAccount()
	aseed, _ := akp.Seed()
	if err := os.WriteFile(accountSeed, aseed, 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		name    string
		cfg     natsauth.ClientConfig
		wantErr string // "" for valid
	}{
		{"zero", natsauth.ClientConfig{}, ""},
		{"nkey", natsauth.ClientConfig{NkeyFile: ids.WriterFile}, ""},
		{"creds", natsauth.ClientConfig{CredsFile: creds}, ""},
		{"full tls", natsauth.ClientConfig{NkeyFile: ids.ReaderFile, TLSCA: pki.CA, TLSCert: pki.Cert, TLSKey: pki.Key}, ""},
		{"nkey and creds", natsauth.ClientConfig{NkeyFile: ids.WriterFile, CredsFile: creds}, "both set"},
		{"cert without key", natsauth.ClientConfig{TLSCert: pki.Cert}, "--nats-tls-cert needs --nats-tls-key"},
		{"key without cert", natsauth.ClientConfig{TLSKey: pki.Key}, "--nats-tls-key needs --nats-tls-cert"},
		{"missing nkey", natsauth.ClientConfig{NkeyFile: missing}, "--nats-nkey"},
		{"open nkey", natsauth.ClientConfig{NkeyFile: openSeed}, "too open"},
		{"account seed", natsauth.ClientConfig{NkeyFile: accountSeed}, "not a user nkey seed"},
		{"missing creds", natsauth.ClientConfig{CredsFile: missing}, "--nats-creds"},
		{"seed as creds", natsauth.ClientConfig{CredsFile: ids.WriterFile}, "--nats-creds"},
		{"expired creds", natsauth.ClientConfig{CredsFile: expired}, "expired"},
		{"missing ca", natsauth.ClientConfig{TLSCA: missing}, "--nats-tls-ca"},
		{"ca not pem", natsauth.ClientConfig{TLSCA: notPEM}, "no PEM certificate"},
		{"key of another cert", natsauth.ClientConfig{TLSCert: pki.CA, TLSKey: pki.Key}, "--nats-tls-cert/--nats-tls-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			opts, oerr := tc.cfg.Options()
			if tc.wantErr == "" {
				if err != nil || oerr != nil {
					t.Fatalf("Validate: %v, Options: %v", err, oerr)
				}
				var n int
				for _, f := range []string{tc.cfg.NkeyFile, tc.cfg.CredsFile, tc.cfg.TLSCA, tc.cfg.TLSCert} {
					if f != "" {
						n++
					}
				}
				if len(opts) != n {
					t.Errorf("%d options, want %d", len(opts), n)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate: %v, want an error containing %q", err, tc.wantErr)
			}
			if oerr == nil {
				t.Error("Options accepted an invalid config")
			}
			if err != nil && strings.Contains(err.Error(), strings.TrimSpace(string(seed))) {
				t.Error("the error contains a seed")
			}
		})
	}
}

// writeCreds writes a .creds file for a user JWT signed by a new account.
func writeCreds(t *testing.T, dir, name string, expires int64) string {
	t.Helper()
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	claims := jwt.NewUserClaims(upub)
	claims.Expires = expires
	token, err := claims.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExplain(t *testing.T) {
	if natsauth.Explain("nats://x:4222", nil) != nil {
		t.Error("Explain(nil) is not nil")
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nats.ErrAuthorization, "authorization"},
		{fmt.Errorf("connect: %w", nats.ErrAuthRevoked), "authorization"},
		{errors.New("nats: authorization violation"), "authorization"},
		{x509.UnknownAuthorityError{}, "TLS"},
		{errors.New("tls: first record does not look like a TLS handshake"), "TLS"},
		{nats.ErrSecureConnRequired, "TLS"},
		{nats.ErrNoServers, "unreachable"},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "unreachable"},
		{errors.New("something else"), "nats nats://h:4222: something else"},
	} {
		got := natsauth.Explain("nats://user:secret@h:4222", tc.err)
		if !errors.Is(got, tc.err) && !errors.As(got, new(x509.UnknownAuthorityError)) {
			t.Errorf("Explain(%v) = %v does not wrap the original", tc.err, got)
		}
		if !strings.Contains(got.Error(), tc.want) || strings.Contains(got.Error(), "secret") || strings.Contains(got.Error(), "\n") {
			t.Errorf("Explain(%v) = %q, want one line with %q and no password", tc.err, got, tc.want)
		}
	}
}
