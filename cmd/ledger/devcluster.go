package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/eventstore/embedded"
	"github.com/sessionledger/ledger/eventstore/natsauth"
)

// devClusterCmd runs a whole replicated deployment in one process, on
// loopback: a 3-node JetStream cluster (in-process nats-servers) and
// several ledger instances sharing one R3 stream, each with its own
// projection. It is for trying replicas out (scripts/cluster), not for
// production, where nats-server and each `ledger serve` run on their own.
type devClusterCmd struct {
	outputFlags
	Dir        string        `name:"dir" default:"./data/cluster" help:"State of the NATS nodes (nats/node-N) and of each instance (ledger-N); kept across runs."`
	Instances  int           `name:"instances" default:"3" help:"Ledger instances to run (1-9)."`
	NATSPort   int           `name:"nats-port" default:"4222" help:"Client port of the first NATS node; the others use the next ports."`
	RoutePort  int           `name:"route-port" default:"6222" help:"Cluster (route) port of the first NATS node; the others use the next ports."`
	HTTPPort   int           `name:"http-port" default:"8081" help:"HTTP port of the first ledger instance; the others use the next ports."`
	ReadStream string        `name:"read-stream" placeholder:"NAME" help:"Let the last instance read from a mirror with this name, as a reader in another region would."`
	MaxLag     time.Duration `name:"max-lag" default:"${default_max_lag}" help:"--max-lag of every instance."`
}

func (c *devClusterCmd) Run() error {
	if c.Instances < 1 || c.Instances > 9 {
		return errors.New("--instances must be 1 to 9")
	}
	log := c.logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	const nodes = 3
	// Clients authenticate with nkeys, as in production: the instances as
	// the writer, auditors and the nats CLI as the reader.
	ids, err := natsauth.LoadOrCreate(filepath.Join(c.Dir, "nats"))
	if err != nil {
		return err
	}
	cluster, err := embedded.StartCluster(embedded.ClusterConfig{
		Name:        "ledger-dev",
		Dir:         filepath.Join(c.Dir, "nats"),
		Nodes:       nodes,
		ClientPorts: []int{c.NATSPort, c.NATSPort + 1, c.NATSPort + 2},
		RoutePorts:  []int{c.RoutePort, c.RoutePort + 1, c.RoutePort + 2},
		SyncAlways:  true,
		Users:       ids.ServerUsers(eventstore.DefaultStream),
	})
	if err != nil {
		return err
	}
	defer cluster.Shutdown()
	log.Info("NATS cluster ready", "urls", cluster.URLs())

	var services []*Service
	defer func() {
		for _, s := range services {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			_ = s.Close(sctx)
			cancel()
		}
	}()
	// The first instance creates the ledger and its signing key; the others
	// write to the same ledger, so they sign with the same key.
	keyFile := filepath.Join(c.Dir, "ledger-1", signingKeyFile)
	masterFile := filepath.Join(c.Dir, "ledger-1", masterKeyFile)
	for i := range c.Instances {
		lc := LogConfig{
			DataDir: filepath.Join(c.Dir, fmt.Sprintf("ledger-%d", i+1)),
			NATSURL: cluster.URLs(),
			Stream:  eventstore.DefaultStream,
			NATS:    natsauth.ClientConfig{NkeyFile: ids.WriterFile},
		}
		if i > 0 {
			lc.SigningKeyFile = keyFile
			lc.MasterKeyFile = masterFile
		}
		if c.ReadStream != "" && i == c.Instances-1 {
			lc.ReadStream = c.ReadStream
		}
		svc, err := StartService(ctx, ServiceConfig{ // the rest: the defaults
			LogConfig: lc,
			HTTPAddr:  fmt.Sprintf("127.0.0.1:%d", c.HTTPPort+i),
			Logger:    log.With("instance", fmt.Sprintf("ledger-%d", i+1)),
			MaxLag:    c.MaxLag,
		})
		if err != nil {
			return fmt.Errorf("instance %d: %w", i+1, err)
		}
		services = append(services, svc)
	}

	out := os.Stdout
	fmt.Fprintf(out, "\nNATS cluster (3 nodes, stream %s at 3 replicas):\n  %s\n\nLedger instances:\n", eventstore.DefaultStream, cluster.URLs())
	for i, s := range services {
		note := ""
		if c.ReadStream != "" && i == len(services)-1 {
			note = "  (reads mirror " + c.ReadStream + ")"
		}
		fmt.Fprintf(out, "  ledger-%d  %s%s\n", i+1, s.URL(), note)
	}
	a, b := services[0].URL(), services[len(services)-1].URL()
	fmt.Fprintf(out, `
Try it (jq helps):
  curl -si -XPOST %[1]s/v1/auth/signup -H 'Content-Type: application/json' -d '{"email":"me@example.com","password":"a long password"}'
      # note "token" and the X-Ledger-Seq header (also "seq" in the response)
  curl -s %[2]s/v1/validate -H "Authorization: Bearer $TOKEN" -H "X-Ledger-Min-Seq: $SEQ"
  curl -si -XPOST %[1]s/v1/auth/logout -H "Authorization: Bearer $TOKEN"
  curl -s %[2]s/readyz; curl -s %[2]s/metrics | grep ledger_projection_lag

Point your own instance at it (same NATS identity, same signing key):
  ledger serve --nats-url %[3]s --nats-nkey %[5]s --signing-key %[6]s --data-dir ./data/mine --http 127.0.0.1:8090
Read the stream as an auditor (read-only identity; public key from 'ledger keys public --signing-key %[6]s'):
  ledger audit verify --nats-url %[3]s --nats-nkey %[7]s --signing-key %[6]s

Ctrl-C stops everything; state stays in %[4]s (delete it to start over).
`, a, b, cluster.URLs(), c.Dir, ids.WriterFile, keyFile, ids.ReaderFile)

	errc := make(chan error, len(services))
	for i, s := range services {
		go func() { errc <- fmt.Errorf("instance %d stopped: %w", i+1, <-s.ServeErr()) }()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	log.Info("shutting down")
	return nil
}
