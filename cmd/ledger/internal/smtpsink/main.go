// Command smtpsink is a real SMTP server for the ledger's tests: it
// accepts every message on a loopback port and writes each as one JSON
// line ({"from","to","data","tls","tls_version","auth_user"}) to stdout,
// after a first line "listening <addr>". The tests build it and run it as
// a separate process, so delivery goes over a real SMTP conversation
// (go-smtp, a maintained server library), not a mock.
//
// -tls-cert and -tls-key (PEM) make it offer STARTTLS, or with -implicit-tls
// speak TLS from the first byte (smtps); without them it offers no
// STARTTLS. -user and -pass make it require AUTH PLAIN with them.
package main

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

type message struct {
	From       string   `json:"from"`
	To         []string `json:"to"`
	Data       string   `json:"data"`
	TLS        bool     `json:"tls"`
	TLSVersion string   `json:"tls_version,omitempty"`
	AuthUser   string   `json:"auth_user,omitempty"`
}

type session struct {
	conn       *smtp.Conn
	user, pass string // required credentials, if any
	authUser   string
	m          message
}

func (s *session) Reset()        { s.m = message{} }
func (s *session) Logout() error { return nil }
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.user != "" && s.authUser == "" {
		return smtp.ErrAuthRequired
	}
	s.m.From = from
	return nil
}
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.m.To = append(s.m.To, to)
	return nil
}
func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.Data = string(b)
	if st, ok := s.conn.TLSConnectionState(); ok {
		s.m.TLS, s.m.TLSVersion = true, tls.VersionName(st.Version)
	}
	s.m.AuthUser = s.authUser
	out.Lock()
	defer out.Unlock()
	return out.enc.Encode(s.m)
}

func (s *session) AuthMechanisms() []string {
	if s.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.user || pass != s.pass {
			return errors.New("invalid credentials")
		}
		s.authUser = user
		return nil
	}), nil
}

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to listen on")
	certFile := flag.String("tls-cert", "", "certificate (PEM): offer STARTTLS, or with -implicit-tls speak TLS only")
	keyFile := flag.String("tls-key", "", "key (PEM) of -tls-cert")
	implicit := flag.Bool("implicit-tls", false, "TLS from the first byte (smtps), not STARTTLS")
	user := flag.String("user", "", "require AUTH PLAIN with this user name")
	pass := flag.String("pass", "", "and this password")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{conn: c, user: *user, pass: *pass}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if *implicit {
			ln = tls.NewListener(ln, cfg)
		} else {
			srv.TLSConfig = cfg
		}
	} else if *implicit {
		log.Fatal("-implicit-tls needs -tls-cert and -tls-key")
	}
	fmt.Printf("listening %s\n", ln.Addr())
	log.Fatal(srv.Serve(ln))
}
