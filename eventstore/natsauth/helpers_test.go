package natsauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// checkFor retries fn until it succeeds or total has passed, then fails
// the test with fn's last error: waiting on a condition, not on a guess of
// how long it takes.
func checkFor(t *testing.T, total, sleep time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", total, err)
		}
		time.Sleep(sleep)
	}
}

// asyncErrors collects a connection's asynchronous errors, where the server
// reports permission violations.
type asyncErrors struct {
	mu   sync.Mutex
	errs []string
}

func (a *asyncErrors) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		a.mu.Lock()
		a.errs = append(a.errs, err.Error())
		a.mu.Unlock()
	})
}

// deniedSubjects are the subjects of the permission violations seen so far.
func (a *asyncErrors) deniedSubjects() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.errs {
		if _, rest, ok := strings.Cut(e, `Permissions Violation for `); ok {
			if _, subj, ok := strings.Cut(rest, ` to "`); ok {
				out = append(out, strings.TrimSuffix(strings.Fields(subj)[0], `"`))
			}
		}
	}
	return out
}

// waitDenied waits until the server has reported a permission violation
// for every subject in want.
func (a *asyncErrors) waitDenied(t *testing.T, want ...string) {
	t.Helper()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		got := a.deniedSubjects()
		for _, w := range want {
			if !slices.Contains(got, w) {
				return fmt.Errorf("no permission violation for %q yet; have %q", w, got)
			}
		}
		return nil
	})
}

// mustFail runs every op at once, each with a short deadline (a refused
// request is never answered, so it ends when its context does), and fails
// the test for each one that succeeded.
func mustFail(t *testing.T, ops map[string]func(context.Context) error) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	succeeded := map[string]bool{}
	for name, op := range ops {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			if op(ctx) == nil {
				mu.Lock()
				succeeded[name] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for name := range succeeded {
		t.Errorf("%s: succeeded, want it refused", name)
	}
}

// testPKI is a throwaway CA and one certificate for 127.0.0.1/localhost
// that serves both sides of TLS (clients and routes).
type testPKI struct {
	CA, Cert, Key string // PEM files
}

func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ledger test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "nats test node"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem")}
	writePEM(t, p.CA, "CERTIFICATE", caDER, 0o644)
	writePEM(t, p.Cert, "CERTIFICATE", der, 0o644)
	writePEM(t, p.Key, "PRIVATE KEY", keyDER, 0o600)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
}
