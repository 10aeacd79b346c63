package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/wneessen/go-mail"
)

// Delivery of codes and links (command.Notifier): by SMTP, to a webhook
// for apps that send their own mail, and in development to stderr. A
// request only enqueues its notice; workers deliver it afterwards, each
// attempt bounded by deliveryTimeout. Failures are logged without the code
// or link and counted (ledger_notifications_total{channel,result}); a full
// queue drops the notice and counts it. Raw codes and links exist only in
// the message delivered: never in a log line, an event or the data dir.

const (
	deliveryQueue   = 1024
	deliveryWorkers = 2
	deliveryTimeout = 30 * time.Second
)

// NotifyConfig is where codes and links go.
type NotifyConfig struct {
	// SMTPURL is smtp://[user:pass@]host[:587] (STARTTLS required; add
	// ?starttls=optional to fall back to plain text when the server
	// offers no STARTTLS, ?starttls=off for none) or smtps://host[:465]
	// (implicit TLS). SMTPUsername and SMTPPassword, if set, win over the
	// URL's.
	SMTPURL      string
	SMTPFrom     string
	SMTPUsername string
	SMTPPassword string
	// SMTPCAFile is a PEM file of CA certificates the SMTP server's
	// certificate is verified with instead of the system's (a private CA,
	// or a self-signed server).
	SMTPCAFile string
	// MailTemplates is a directory of <purpose>.txt files (first line
	// the subject) overriding the built-in messages.
	MailTemplates string
	// Webhook gets a JSON POST per notice, signed with HMAC-SHA256 under
	// the key in WebhookSecretFile (X-Ledger-Signature: sha256=<hex>).
	Webhook           string
	WebhookSecretFile string
	// DevPrintCodes prints every notice to stderr (development only; the
	// HTTP address must be loopback).
	DevPrintCodes bool
	// LinkURL is where links point: LinkURL?token=<token>. Empty: the
	// message carries the code only (the webhook still gets the token).
	LinkURL string
}

func (c NotifyConfig) enabled() bool { return c.SMTPURL != "" || c.Webhook != "" || c.DevPrintCodes }

// validate names every problem of the delivery settings.
func (c NotifyConfig) validate(httpAddr string) []error {
	var errs []error
	if c.SMTPURL != "" {
		u, err := url.Parse(c.SMTPURL)
		switch {
		case err != nil || (u.Scheme != "smtp" && u.Scheme != "smtps") || u.Hostname() == "":
			errs = append(errs, errors.New("--smtp-url must be smtp://[user:pass@]host[:port] or smtps://…"))
		case u.Query().Get("starttls") != "" && u.Query().Get("starttls") != "optional" && u.Query().Get("starttls") != "off":
			errs = append(errs, errors.New("--smtp-url: starttls must be optional or off (absent: required)"))
		}
		if c.SMTPFrom == "" {
			errs = append(errs, errors.New("--smtp-url needs --smtp-from"))
		}
	} else if c.SMTPCAFile != "" {
		errs = append(errs, errors.New("--smtp-ca-file needs --smtp-url"))
	}
	if c.Webhook != "" {
		if u, err := url.Parse(c.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("--notify-webhook must be an http:// or https:// URL"))
		}
		if c.WebhookSecretFile == "" {
			errs = append(errs, errors.New("--notify-webhook needs --notify-webhook-secret-file"))
		}
	}
	if c.LinkURL != "" {
		if u, err := url.Parse(c.LinkURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("--link-url must be an http:// or https:// URL"))
		}
	}
	if c.MailTemplates != "" {
		if st, err := os.Stat(c.MailTemplates); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("--mail-templates %s is not a directory", c.MailTemplates))
		} else if _, err := loadTemplates(c.MailTemplates); err != nil {
			errs = append(errs, err)
		}
	}
	if c.SMTPCAFile != "" {
		if _, err := smtpTLSConfig(c.SMTPCAFile, "localhost"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.DevPrintCodes && !loopbackAddr(httpAddr) {
		errs = append(errs, fmt.Errorf("--dev-print-codes prints login and reset codes: it is for development on a loopback address only, not --http %s", httpAddr))
	}
	return errs
}

// loopbackAddr reports whether host:port listens on loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// message is what a template gets.
type message struct {
	Email, Purpose, Code, Link string
	Minutes                    int
}

var builtinTemplates = map[domain.Purpose]string{
	domain.PurposePasswordReset: `Your password reset code
Someone (hopefully you) asked to reset the password of {{.Email}}.

Your code: {{.Code}}
{{if .Link}}
Or open this link: {{.Link}}
{{end}}
It works once, for {{.Minutes}} minutes. If you did not ask, ignore this message: your password stays as it is.
`,
	domain.PurposeLogin: `Your login code
Your code to log in as {{.Email}}: {{.Code}}
{{if .Link}}
Or open this link: {{.Link}}
{{end}}
It works once, for {{.Minutes}} minutes. If you did not ask for it, ignore this message.
`,
}

// loadTemplates parses the built-in templates, each overridden by
// <dir>/<purpose>.txt if there is one, and tries each on a sample message:
// a template that does not parse or does not execute (a misspelt field)
// is refused at start, not at the first delivery.
func loadTemplates(dir string) (map[domain.Purpose]*template.Template, error) {
	templates := map[domain.Purpose]*template.Template{}
	for p, text := range builtinTemplates {
		name := "built-in " + string(p) + " template"
		if dir != "" {
			path := filepath.Join(dir, string(p)+".txt")
			if b, err := os.ReadFile(path); err == nil {
				text, name = string(b), path
			} else if !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("--mail-templates: %w", err)
			}
		}
		t, err := template.New(string(p)).Option("missingkey=error").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("--mail-templates: %s: %w", name, err)
		}
		sample := message{Email: "user@example.com", Purpose: string(p), Code: "123456", Link: "https://example.com/?token=x", Minutes: 10}
		var buf bytes.Buffer
		if err := t.Execute(&buf, sample); err != nil {
			return nil, fmt.Errorf("--mail-templates: %s: %w", name, err)
		}
		if subject, _, _ := strings.Cut(buf.String(), "\n"); strings.TrimSpace(subject) == "" {
			return nil, fmt.Errorf("--mail-templates: %s: the first line (the subject) is empty", name)
		}
		templates[p] = t
	}
	return templates, nil
}

type sender interface {
	name() string
	send(ctx context.Context, n command.Notice, m message) error
}

type notifier struct {
	log     *slog.Logger
	queue   chan command.Notice
	senders []sender
	linkURL string
	// smtpPassword is scrubbed from logged errors.
	smtpPassword string
	results      *prometheus.CounterVec
	wg           sync.WaitGroup
	once         sync.Once
}

// newNotifier builds the delivery of cfg, or nil if none is configured.
func newNotifier(cfg NotifyConfig, log *slog.Logger, reg prometheus.Registerer) (*notifier, error) {
	if !cfg.enabled() {
		return nil, nil
	}
	templates, err := loadTemplates(cfg.MailTemplates)
	if err != nil {
		return nil, err
	}
	n := &notifier{log: log, queue: make(chan command.Notice, deliveryQueue), linkURL: cfg.LinkURL,
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_notifications_total", Help: "Codes and links delivered, by channel (smtp, webhook, dev) and result (sent, failed, dropped)."}, []string{"channel", "result"})}
	if cfg.SMTPURL != "" {
		s, err := newSMTPSender(cfg, templates)
		if err != nil {
			return nil, err
		}
		n.senders = append(n.senders, s)
		n.smtpPassword = s.password
	}
	if cfg.Webhook != "" {
		secret, err := readSecretFile(cfg.WebhookSecretFile, "--notify-webhook-secret-file")
		if err != nil {
			return nil, err
		}
		n.senders = append(n.senders, &webhookSender{url: cfg.Webhook, secret: secret, client: &http.Client{Timeout: deliveryTimeout}})
	}
	if cfg.DevPrintCodes {
		n.senders = append(n.senders, devSender{w: os.Stderr})
		log.Warn("--dev-print-codes: login and reset codes are printed to stderr; for development only")
	}
	if reg != nil {
		reg.MustRegister(n.results)
	}
	for range deliveryWorkers {
		n.wg.Add(1)
		go n.run()
	}
	return n, nil
}

// Notify enqueues a notice; it never waits.
func (n *notifier) Notify(no command.Notice) {
	select {
	case n.queue <- no:
	default:
		n.results.WithLabelValues("queue", "dropped").Inc()
		n.log.Error("delivery queue full; a code was not sent", "purpose", no.Purpose)
	}
}

func (n *notifier) run() {
	defer n.wg.Done()
	for no := range n.queue {
		m := message{Email: no.Email, Purpose: string(no.Purpose), Code: no.Code, Link: n.link(no.Token),
			Minutes: int(time.Until(no.ExpiresAt).Round(time.Minute) / time.Minute)}
		if m.Minutes < 1 || no.ExpiresAt.IsZero() {
			m.Minutes = int(domain.DefaultChallengeRules().TTL(no.Purpose) / time.Minute)
		}
		for _, s := range n.senders {
			ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
			err := s.send(ctx, no, m)
			cancel()
			if err != nil {
				n.results.WithLabelValues(s.name(), "failed").Inc()
				n.log.Error("delivery failed", "channel", s.name(), "purpose", no.Purpose, "err", scrub(err, no.Token, no.Code, n.smtpPassword))
				continue
			}
			n.results.WithLabelValues(s.name(), "sent").Inc()
			n.log.Info("code delivered", "channel", s.name(), "purpose", no.Purpose)
		}
	}
}

// scrub keeps a code, token or the SMTP password out of an error that
// might echo it.
func scrub(err error, secrets ...string) string {
	s := err.Error()
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

func (n *notifier) link(token string) string {
	if n.linkURL == "" || token == "" {
		return ""
	}
	sep := "?"
	if strings.Contains(n.linkURL, "?") {
		sep = "&"
	}
	return n.linkURL + sep + "token=" + url.QueryEscape(token)
}

// Close stops taking notices and waits (at most until ctx ends) for those
// queued to be delivered.
func (n *notifier) Close(ctx context.Context) {
	n.once.Do(func() { close(n.queue) })
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		n.log.Warn("stopped before every queued code was delivered")
	}
}

// readSecretFile reads a secret from a file only its owner may read.
func readSecretFile(path, what string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s is open to other users (mode %04o): chmod 600 %s", what, path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < 16 {
		return nil, fmt.Errorf("%s %s holds %d bytes; at least 16 are required (openssl rand -hex 32)", what, path, len(b))
	}
	return b, nil
}

// smtpSender sends a text message through an SMTP server.
type smtpSender struct {
	host      string
	password  string
	opts      []mail.Option
	from      string
	templates map[domain.Purpose]*template.Template
}

func newSMTPSender(cfg NotifyConfig, templates map[domain.Purpose]*template.Template) (*smtpSender, error) {
	u, err := url.Parse(cfg.SMTPURL)
	if err != nil {
		return nil, fmt.Errorf("--smtp-url: %w", err)
	}
	opts := []mail.Option{mail.WithTimeout(deliveryTimeout)}
	port := 587
	if u.Scheme == "smtps" {
		port = 465
		opts = append(opts, mail.WithSSL())
	} else {
		switch u.Query().Get("starttls") {
		case "off":
			opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
		case "optional":
			opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
		default:
			opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
		}
	}
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("--smtp-url: port %q", p)
		}
	}
	opts = append(opts, mail.WithPort(port))
	if cfg.SMTPCAFile != "" {
		tc, err := smtpTLSConfig(cfg.SMTPCAFile, u.Hostname())
		if err != nil {
			return nil, err
		}
		opts = append(opts, mail.WithTLSConfig(tc))
	}
	user, pass := u.User.Username(), ""
	if p, ok := u.User.Password(); ok {
		pass = p
	}
	if cfg.SMTPUsername != "" {
		user = cfg.SMTPUsername
	}
	if cfg.SMTPPassword != "" {
		pass = cfg.SMTPPassword
	}
	if user != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover), mail.WithUsername(user), mail.WithPassword(pass))
	}
	return &smtpSender{host: u.Hostname(), password: pass, opts: opts, from: cfg.SMTPFrom, templates: templates}, nil
}

// smtpTLSConfig verifies the SMTP server (named host) with the CA
// certificates in caFile only.
func smtpTLSConfig(caFile, host string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--smtp-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--smtp-ca-file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}, nil
}

func (s *smtpSender) name() string { return "smtp" }

func (s *smtpSender) send(ctx context.Context, n command.Notice, m message) error {
	var buf bytes.Buffer
	if err := s.templates[n.Purpose].Execute(&buf, m); err != nil {
		return fmt.Errorf("template %s: %w", n.Purpose, err)
	}
	subject, body, _ := strings.Cut(buf.String(), "\n")
	msg := mail.NewMsg()
	if err := msg.From(s.from); err != nil {
		return fmt.Errorf("from: %w", err)
	}
	if err := msg.To(n.Email); err != nil {
		return fmt.Errorf("to: %w", err)
	}
	msg.Subject(strings.TrimSpace(subject))
	msg.SetBodyString(mail.TypeTextPlain, body)
	c, err := mail.NewClient(s.host, s.opts...)
	if err != nil {
		return err
	}
	return c.DialAndSendWithContext(ctx, msg)
}

// webhookSender POSTs a notice as JSON, signed.
type webhookSender struct {
	url    string
	secret []byte
	client *http.Client
}

// WebhookSignatureHeader carries sha256=<hex HMAC-SHA256 of the body>.
const WebhookSignatureHeader = "X-Ledger-Signature"

type webhookBody struct {
	Email     string `json:"email"`
	Purpose   string `json:"purpose"`
	Code      string `json:"code"`
	Token     string `json:"token"`
	Link      string `json:"link,omitempty"`
	ExpiresAt string `json:"expires_at"`
}

func (s *webhookSender) name() string { return "webhook" }

func (s *webhookSender) send(ctx context.Context, n command.Notice, m message) error {
	body, err := json.Marshal(webhookBody{Email: n.Email, Purpose: string(n.Purpose), Code: n.Code, Token: n.Token, Link: m.Link,
		ExpiresAt: n.ExpiresAt.UTC().Format(time.RFC3339)})
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, s.secret)
	mac.Write(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(WebhookSignatureHeader, "sha256="+hex.EncodeToString(mac.Sum(nil)))
	res, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %d", res.StatusCode)
	}
	return nil
}

// devSender prints notices (development only).
type devSender struct{ w io.Writer }

func (devSender) name() string { return "dev" }

func (d devSender) send(_ context.Context, n command.Notice, m message) error {
	_, err := fmt.Fprintf(d.w, "DEV %s code for %s: %s %s\n", n.Purpose, n.Email, n.Code, m.Link)
	return err
}

// challengeKeys hash codes with keys derived from the signing keys: the
// one in force for new codes, any of the ring's for a code issued before a
// rotation.
type challengeKeys struct {
	active func() (domain.SigningKey, error)
	ring   *domain.Keyring
}

func (c challengeKeys) CurrentChallengeKey() (string, []byte, error) {
	k, err := c.active()
	if err != nil {
		return "", nil, err
	}
	return k.ID(), k.ChallengeKey(), nil
}

func (c challengeKeys) ChallengeKey(kid string) ([]byte, bool) {
	k, ok := c.ring.Key(kid)
	if !ok {
		return nil, false
	}
	return k.ChallengeKey(), true
}
