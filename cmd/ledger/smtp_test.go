package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSignedCert writes a self-signed certificate for 127.0.0.1 and
// localhost and its key, PEM, for the SMTP sink; the certificate is also
// the CA file that makes the ledger trust it.
func selfSignedCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "smtpsink test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func viaNotify(n NotifyConfig) option {
	return func(c *ServiceConfig) {
		if n.SMTPFrom == "" {
			n.SMTPFrom = "ledger@example.com"
		}
		c.Notify = n
	}
}

// requestReset signs an account up on a new ledger and asks for its reset.
func requestReset(t *testing.T, l *testLedger, email string) {
	t.Helper()
	l.signup(t, email, "a password 123", false)
	l.clock.Advance(2 * time.Minute)
	if r := l.do(t, "POST", "/v1/auth/password/reset-request", "", map[string]string{"email": email}); r.Status != 202 {
		t.Fatalf("reset request: %d %s", r.Status, r.Raw)
	}
}

// deliveryFailed waits for the ledger to log a failed SMTP delivery and
// returns the line.
func deliveryFailed(t *testing.T, l *testLedger) string {
	t.Helper()
	var line string
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		for _, ln := range strings.Split(l.logs.String(), "\n") {
			if strings.Contains(ln, "delivery failed") && strings.Contains(ln, "channel=smtp") {
				line = ln
				return nil
			}
		}
		return errNoAnswer
	})
	return line
}

// TestSMTPStartTLS: over a real SMTP server process that offers STARTTLS
// with a self-signed certificate and requires AUTH: with --smtp-ca-file
// the message arrives over TLS after AUTH; without it the certificate is
// refused and nothing is sent; a wrong password fails. The SMTP password
// is in no log line.
func TestSMTPStartTLS(t *testing.T) {
	cert, key := selfSignedCert(t)
	const user, pass, wrongPass = "ledger-mailer", "smtp-password-0123456789-secret", "wrong-smtp-password-9876543210"
	addr, msgs := startSMTPSink(t, "-tls-cert", cert, "-tls-key", key, "-user", user, "-pass", pass)

	l := startLedger(t, t.TempDir(), newClock(), viaNotify(NotifyConfig{SMTPURL: "smtp://" + addr, SMTPUsername: user, SMTPPassword: pass, SMTPCAFile: cert}))
	requestReset(t, l, "tls@example.com")
	m := nextMail(t, msgs)
	if m.To != "tls@example.com" || !m.TLS || m.AuthUser != user {
		t.Fatalf("message %+v: want it over TLS, after AUTH as %s", m, user)
	}
	t.Logf("delivered over STARTTLS (%s) after AUTH PLAIN", m.TLSVersion)

	// The same server without the CA: its certificate is not trusted.
	l2 := startLedger(t, t.TempDir(), newClock(), viaNotify(NotifyConfig{SMTPURL: "smtp://" + addr, SMTPUsername: user, SMTPPassword: pass}))
	requestReset(t, l2, "tls@example.com")
	if line := deliveryFailed(t, l2); !strings.Contains(line, "certificate") {
		t.Fatalf("without --smtp-ca-file: %s", line)
	}
	noMail(t, msgs, "an untrusted certificate")

	// A wrong password: refused, and neither password is logged.
	l3 := startLedger(t, t.TempDir(), newClock(), viaNotify(NotifyConfig{SMTPURL: "smtp://" + user + ":" + wrongPass + "@" + addr, SMTPCAFile: cert}))
	requestReset(t, l3, "tls@example.com")
	t.Logf("wrong password: %s", deliveryFailed(t, l3))
	noMail(t, msgs, "a wrong SMTP password")
	for _, lg := range []*testLedger{l, l2, l3} {
		for _, secret := range []string{pass, wrongPass} {
			if strings.Contains(lg.logs.String(), secret) {
				t.Fatalf("the SMTP password is in the log:\n%s", lg.logs.String())
			}
		}
	}
}

// TestSMTPImplicitTLS: smtps:// to a real server process that speaks TLS
// from the first byte.
func TestSMTPImplicitTLS(t *testing.T) {
	cert, key := selfSignedCert(t)
	addr, msgs := startSMTPSink(t, "-tls-cert", cert, "-tls-key", key, "-implicit-tls")
	l := startLedger(t, t.TempDir(), newClock(), viaNotify(NotifyConfig{SMTPURL: "smtps://" + addr, SMTPCAFile: cert}))
	requestReset(t, l, "smtps@example.com")
	if m := nextMail(t, msgs); m.To != "smtps@example.com" || !m.TLS {
		t.Fatalf("message %+v: want it over TLS", m)
	} else {
		t.Logf("delivered over implicit TLS (%s)", m.TLSVersion)
	}
}

// TestSMTPStartTLSRequired: smtp:// requires STARTTLS: a server that does
// not offer it gets nothing, unless ?starttls=optional (then in plain
// text).
func TestSMTPStartTLSRequired(t *testing.T) {
	addr, msgs := startSMTPSink(t)
	l := startLedger(t, t.TempDir(), newClock(), viaNotify(NotifyConfig{SMTPURL: "smtp://" + addr}))
	requestReset(t, l, "plain@example.com")
	t.Logf("no STARTTLS: %s", deliveryFailed(t, l))
	noMail(t, msgs, "a server without STARTTLS")

	l2 := startLedger(t, t.TempDir(), newClock(), viaNotify(NotifyConfig{SMTPURL: "smtp://" + addr + "?starttls=optional"}))
	requestReset(t, l2, "plain@example.com")
	if m := nextMail(t, msgs); m.To != "plain@example.com" || m.TLS {
		t.Fatalf("message %+v: want it in plain text", m)
	}
}

// TestMailTemplates: a template in --mail-templates replaces the built-in
// one in the message delivered (the other purpose keeps the built-in); a
// template that does not parse or does not execute is refused at start.
func TestMailTemplates(t *testing.T) {
	dir := t.TempDir()
	const custom = "Sign in to Example, {{.Email}}\nHello from Example! Your code is {{.Code}}, good for {{.Minutes}} minutes.\n{{if .Link}}Link: {{.Link}}\n{{end}}"
	if err := os.WriteFile(filepath.Join(dir, "login.txt"), []byte(custom), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, msgs := startSMTPSink(t)
	l := startLedger(t, t.TempDir(), newClock(), viaNotify(NotifyConfig{SMTPURL: "smtp://" + addr + "?starttls=off", MailTemplates: dir, LinkURL: "https://app.example.com/auth/email"}))
	const email = "tmpl@example.com"
	requestReset(t, l, email)
	if m := nextMail(t, msgs); m.Subject != "Your password reset code" {
		t.Fatalf("the reset message (built in) has subject %q", m.Subject)
	}
	if r := l.do(t, "POST", "/v1/auth/code/request", "", map[string]string{"email": email}); r.Status != 202 {
		t.Fatalf("code request: %d %s", r.Status, r.Raw)
	}
	m := nextMail(t, msgs)
	if m.Subject != "Sign in to Example, "+email || !strings.Contains(m.Body, "Hello from Example! Your code is "+m.Code+", good for 5 minutes.") || m.Token == "" {
		t.Fatalf("the login message does not follow the template: subject %q\n%s", m.Subject, m.Body)
	}
	if r := l.do(t, "POST", "/v1/auth/code/verify", "", map[string]any{"email": email, "code": m.Code}); r.Status != 200 {
		t.Fatalf("the templated code: %d %s", r.Status, r.Raw)
	}

	for _, c := range []struct{ text, want string }{
		{"Subject\nYour code {{.Code", "password_reset.txt"},        // does not parse
		{"Subject\nYour code {{.Cod}}", "can't evaluate field Cod"}, // a misspelt field
		{"\nYour code {{.Code}}", "the subject) is empty"},
	} {
		bad := t.TempDir()
		if err := os.WriteFile(filepath.Join(bad, "password_reset.txt"), []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t.TempDir(), newClock(), os.Stderr)
		viaNotify(NotifyConfig{SMTPURL: "smtp://" + addr + "?starttls=off", MailTemplates: bad})(&cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		svc, err := StartService(ctx, cfg)
		cancel()
		if err == nil {
			_ = svc.Close(context.Background())
			t.Fatalf("template %q: the ledger started", c.text)
		}
		if !strings.Contains(err.Error(), "--mail-templates") || !strings.Contains(err.Error(), filepath.Join(bad, "password_reset.txt")) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("template %q: %v, want an error naming the file and %q", c.text, err, c.want)
		}
		t.Logf("refused: %v", err)
	}
}

// TestSMTPPasswordLeavesTheEnvironment: ledger serve reads
// LEDGER_SMTP_PASSWORD and removes it from its environment at once, like
// LEDGER_ADMIN_KEY, even when the start then fails.
func TestSMTPPasswordLeavesTheEnvironment(t *testing.T) {
	t.Setenv(smtpPasswordEnv, "smtp-password-in-the-environment")
	t.Setenv(adminKeyEnv, testAdminKey)
	var c serveCmd
	c.DataDir, c.HTTP = t.TempDir(), "127.0.0.1:0"
	c.SMTPURL = "smtp://mail.example.com" // without --smtp-from: refused before anything starts
	err := c.Run()
	if err == nil || !strings.Contains(err.Error(), "--smtp-from") {
		t.Fatalf("serve: %v, want the missing --smtp-from", err)
	}
	for _, name := range []string{smtpPasswordEnv, adminKeyEnv} {
		if v, ok := os.LookupEnv(name); ok {
			t.Errorf("%s is still in the environment: %q", name, v)
		}
	}
}

// TestSMTPOptions: the CA file needs --smtp-url and must hold a
// certificate; --mail-templates must be a directory.
func TestSMTPOptions(t *testing.T) {
	cert, key := selfSignedCert(t)
	base := testConfig(t.TempDir(), newClock(), os.Stderr)
	for _, c := range []struct {
		n    NotifyConfig
		want string
	}{
		{NotifyConfig{Webhook: "https://example.com/hook", WebhookSecretFile: key, SMTPCAFile: cert}, "--smtp-ca-file needs --smtp-url"},
		{NotifyConfig{SMTPURL: "smtp://mail.example.com", SMTPFrom: "a@example.com", SMTPCAFile: key}, "holds no PEM certificate"},
		{NotifyConfig{SMTPURL: "smtp://mail.example.com", SMTPFrom: "a@example.com", SMTPCAFile: filepath.Join(t.TempDir(), "none.pem")}, "--smtp-ca-file"},
		{NotifyConfig{SMTPURL: "smtp://mail.example.com", SMTPFrom: "a@example.com", MailTemplates: cert}, "is not a directory"},
	} {
		cfg := base
		cfg.Notify = c.n
		cfg.EnsureDefaults()
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.n, err, c.want)
		}
	}
	ok := base
	ok.Notify = NotifyConfig{SMTPURL: "smtps://mail.example.com", SMTPFrom: "a@example.com", SMTPCAFile: cert, MailTemplates: t.TempDir()}
	ok.EnsureDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("a CA file and an empty templates dir: %v", err)
	}
}
