// Command smtpsink is a real SMTP server for the ledger's tests: it
// accepts every message on a loopback port and writes each as one JSON
// line ({"from","to","data"}) to stdout, after a first line
// "listening <addr>". The tests build it and run it as a separate process,
// so delivery goes over a real SMTP conversation (go-smtp, a maintained
// server library), not a mock.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"

	"github.com/emersion/go-smtp"
)

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

type message struct {
	From string   `json:"from"`
	To   []string `json:"to"`
	Data string   `json:"data"`
}

type session struct{ m message }

func (s *session) Reset()        { s.m = message{} }
func (s *session) Logout() error { return nil }
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
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
	out.Lock()
	defer out.Unlock()
	return out.enc.Encode(s.m)
}

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{}, nil }))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	fmt.Printf("listening %s\n", ln.Addr())
	log.Fatal(srv.Serve(ln))
}
