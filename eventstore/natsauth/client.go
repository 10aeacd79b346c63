package natsauth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// ClientConfig is how a ledger process (or a test) authenticates to an
// external NATS: the flags --nats-nkey, --nats-creds, --nats-tls-ca,
// --nats-tls-cert and --nats-tls-key.
type ClientConfig struct {
	NkeyFile  string // user nkey seed file (nk -gen user, or the embedded server's writer.nk)
	CredsFile string // decentralized JWT auth: a .creds file (JWT and seed)
	TLSCA     string // PEM CA bundle the server's certificate must chain to
	TLSCert   string // client certificate (PEM), for servers that verify clients
	TLSKey    string // its private key (PEM)
}

// IsZero reports whether nothing is configured: an anonymous client with
// the system's trust store.
func (c ClientConfig) IsZero() bool { return c == ClientConfig{} }

// Validate checks the configuration and reads every file it names, so a
// mistake is reported at start-up, naming the flag, rather than as a
// failed connection later. Secret files (nkey, creds) that group or others
// can read are refused, like ssh does.
func (c ClientConfig) Validate() error {
	if c.NkeyFile != "" && c.CredsFile != "" {
		return errors.New("--nats-nkey and --nats-creds are both set; a connection has one identity, give one of them")
	}
	if c.TLSCert != "" && c.TLSKey == "" {
		return errors.New("--nats-tls-cert needs --nats-tls-key (the certificate's private key)")
	}
	if c.TLSKey != "" && c.TLSCert == "" {
		return errors.New("--nats-tls-key needs --nats-tls-cert (the certificate it belongs to)")
	}
	if c.NkeyFile != "" {
		kp, err := ReadSeedFile(c.NkeyFile)
		if err != nil {
			return fmt.Errorf("--nats-nkey: %w", err)
		}
		kp.Wipe()
	}
	if c.CredsFile != "" {
		if err := checkCreds(c.CredsFile); err != nil {
			return fmt.Errorf("--nats-creds: %w", err)
		}
	}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return fmt.Errorf("--nats-tls-ca: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("--nats-tls-ca: %s holds no PEM certificate", c.TLSCA)
		}
	}
	if c.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return fmt.Errorf("--nats-tls-cert/--nats-tls-key: %w", err)
		}
	}
	return nil
}

// checkCreds reads a .creds file: a user JWT that has not expired, and the
// user seed it was issued to.
func checkCreds(path string) error {
	data, err := readPrivateFile(path)
	if err != nil {
		return err
	}
	defer wipe(data)
	token, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	claims, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return fmt.Errorf("%s: not a user JWT: %w", path, err)
	}
	if claims.Expires != 0 && time.Unix(claims.Expires, 0).Before(time.Now()) {
		return fmt.Errorf("%s: the user JWT expired at %s; issue new credentials", path, time.Unix(claims.Expires, 0).UTC().Format(time.RFC3339))
	}
	kp, err := jwt.ParseDecoratedUserNKey(data)
	if err != nil {
		return fmt.Errorf("%s: no user seed: %w", path, err)
	}
	defer kp.Wipe()
	if pub, err := kp.PublicKey(); err != nil || pub != claims.Subject {
		return fmt.Errorf("%s: the seed does not belong to the JWT's user %s", path, claims.Subject)
	}
	return nil
}

// Options are the nats.go options for c: nothing for a zero config.
func (c ClientConfig) Options() ([]nats.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	if c.NkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// Explain turns a connect error into one line that names the reason:
// authorization, TLS, or an unreachable server. The original error stays
// wrapped, so errors.Is and errors.As still see it. url may be a
// comma-separated list; credentials in it are not repeated.
func Explain(url string, err error) error {
	if err == nil {
		return nil
	}
	where := redactURLs(url)
	switch {
	case isAuthError(err):
		return fmt.Errorf("nats %s refused the connection (authorization): no credentials, or ones it does not accept; check --nats-nkey/--nats-creds and the server's users: %w", where, err)
	case isTLSError(err):
		return fmt.Errorf("nats %s: TLS failed: check --nats-tls-ca (the CA that signed the server's certificate), the server name in the URL, and --nats-tls-cert/--nats-tls-key: %w", where, err)
	case errors.Is(err, nats.ErrPermissionViolation):
		return fmt.Errorf("nats %s: permission denied: this identity may not do that (a reader identity cannot write or manage the stream): %w", where, err)
	case isUnreachable(err):
		return fmt.Errorf("nats %s unreachable: %w", where, err)
	}
	return fmt.Errorf("nats %s: %w", where, err)
}

func isAuthError(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.Is(err, nats.ErrNkeysNotSupported) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "authorization violation") ||
		strings.Contains(msg, "authentication expired") ||
		strings.Contains(msg, "authentication revoked") ||
		strings.Contains(msg, "account authentication expired")
}

func isTLSError(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		alert     tls.AlertError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &hostname) ||
		errors.As(err, &verify) || errors.As(err, &header) || errors.As(err, &alert) ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) ||
		errors.Is(err, nats.ErrClientCertOrRootCAsRequired) {
		return true
	}
	// nats.go does not always wrap what crypto/tls returned.
	msg := err.Error()
	return strings.Contains(msg, "tls: ") || strings.Contains(msg, "x509: ") ||
		strings.Contains(strings.ToLower(msg), "handshake") ||
		strings.Contains(msg, "secure connection")
}

func isUnreachable(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &opErr) || errors.As(err, &dnsErr)
}

// redactURLs drops user info (user:password@, token@) from each URL.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			u.User = nil
			p = u.String()
		} else if err != nil && strings.Contains(p, "@") {
			p = p[strings.LastIndex(p, "@")+1:] // unparsable: keep only what follows the credentials
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
