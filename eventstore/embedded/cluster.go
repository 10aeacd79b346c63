package embedded

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterConfig describes a JetStream cluster of in-process
// nats-servers on one machine: for `ledger dev-cluster`, for trying replicas
// out, and for fault tests. Production clusters run nats-server itself.
type ClusterConfig struct {
	// Name is the NATS cluster name (default "ledger").
	Name string
	// Dir holds one store directory per node (node-1, node-2, ...).
	Dir string
	// Nodes is the cluster size (default 3).
	Nodes int
	// Host is the interface every node listens on (default 127.0.0.1).
	Host string
	// ClientPorts and RoutePorts fix the ports; zero or missing entries are
	// free ports picked at start. A restarted node keeps its ports, so
	// clients and routes find it again.
	ClientPorts []int
	RoutePorts  []int
	// SyncAlways fsyncs every write before the ack (sync_interval: always).
	SyncAlways bool
	// Logger receives every node's log lines; nil keeps them quiet.
	Logger server.Logger
	// Users, when set (natsauth.Identities.ServerUsers), are the only
	// clients every node admits, each with an nkey; nil admits anyone.
	// Routes then authenticate too, with a password made up at start that
	// only the nodes of this process know: a route is trusted with every
	// account's messages.
	Users []*server.NkeyUser
}

// Cluster is a running in-process JetStream cluster.
type Cluster struct {
	cfg   ClusterConfig
	mu    sync.Mutex
	nodes []*server.Server
	opts  []*server.Options
}

// StartCluster starts every node and waits until JetStream has a meta
// leader that sees all of them. When it picked free ports itself and a node
// does not come up (the port may have been taken between picking and
// binding, and a node that cannot bind only times out), it tries again with
// other ports, three times in all.
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	picked := len(cfg.ClientPorts) < cfg.Nodes || len(cfg.RoutePorts) < cfg.Nodes || cfg.Nodes <= 0
	for _, p := range append(append([]int(nil), cfg.ClientPorts...), cfg.RoutePorts...) {
		picked = picked || p == 0
	}
	for attempt := 1; ; attempt++ {
		c, err := startCluster(cfg)
		if err == nil || !picked || attempt == 3 {
			return c, err
		}
	}
}

func startCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Name == "" {
		cfg.Name = "ledger"
	}
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	clientPorts, err := pickPorts(cfg.Host, cfg.ClientPorts, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	routePorts, err := pickPorts(cfg.Host, cfg.RoutePorts, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	var routeUser *url.Userinfo
	if len(cfg.Users) > 0 {
		secret := make([]byte, 24)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("route password: %w", err)
		}
		routeUser = url.UserPassword("route", hex.EncodeToString(secret))
	}
	routes := make([]string, cfg.Nodes)
	for i, p := range routePorts {
		u := url.URL{Scheme: "nats-route", User: routeUser, Host: net.JoinHostPort(cfg.Host, strconv.Itoa(p))}
		routes[i] = u.String()
	}
	c := &Cluster{cfg: cfg, nodes: make([]*server.Server, cfg.Nodes), opts: make([]*server.Options, cfg.Nodes)}
	for i := range cfg.Nodes {
		c.opts[i] = &server.Options{
			ServerName:         fmt.Sprintf("%s-%d", cfg.Name, i+1),
			Host:               cfg.Host,
			Port:               clientPorts[i],
			JetStream:          true,
			StoreDir:           filepath.Join(cfg.Dir, fmt.Sprintf("node-%d", i+1)),
			SyncAlways:         cfg.SyncAlways,
			NoSigs:             true,
			MaxPayload:         1 << 20,
			JetStreamMaxMemory: 64 << 20,
			Cluster:            server.ClusterOpts{Name: cfg.Name, Host: cfg.Host, Port: routePorts[i]},
			Routes:             server.RoutesFromStr(strings.Join(routes, ",")),
		}
		if len(cfg.Users) > 0 {
			c.opts[i].Nkeys = cfg.Users // each server makes its own copy
			c.opts[i].Cluster.Username = routeUser.Username()
			c.opts[i].Cluster.Password, _ = routeUser.Password()
		}
	}
	for i := range cfg.Nodes {
		if err := c.start(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.WaitReady(60 * time.Second); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// pickPorts returns n ports: the fixed ones given, free ones for the rest.
// A free port is found by binding :0 and releasing it, so another process
// could in principle take it before the node binds it; on loopback in a
// test run that does not happen in practice.
func pickPorts(host string, fixed []int, n int) ([]int, error) {
	out := make([]int, n)
	for i := range n {
		if i < len(fixed) && fixed[i] > 0 {
			out[i] = fixed[i]
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		out[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	return out, nil
}

// nodeReady bounds how long one node may take to accept connections.
const nodeReady = 20 * time.Second

func (c *Cluster) start(i int) error {
	o := *c.opts[i] // NewServer keeps and mutates its options
	o.Routes = append(o.Routes[:0:0], c.opts[i].Routes...)
	srv, err := server.NewServer(&o)
	if err != nil {
		return fmt.Errorf("nats node %d: %w", i+1, err)
	}
	if c.cfg.Logger != nil {
		srv.SetLoggerV2(c.cfg.Logger, false, false, false)
	}
	go srv.Start()
	if !srv.ReadyForConnections(nodeReady) {
		srv.Shutdown()
		return fmt.Errorf("nats node %d: not ready after %s", i+1, nodeReady)
	}
	c.mu.Lock()
	c.nodes[i] = srv
	c.mu.Unlock()
	return nil
}

// WaitReady waits until a meta leader sees every running node and all of
// them are current, i.e. streams can be created and placed.
func (c *Cluster) WaitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		running := c.running()
		for _, s := range running {
			if !s.JetStreamIsLeader() || len(s.JetStreamClusterPeers()) != len(running) {
				continue
			}
			current := true
			for _, o := range running {
				if !o.JetStreamIsCurrent() {
					current = false
				}
			}
			if current {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("nats cluster: no JetStream meta leader with every node in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*server.Server
	for _, s := range c.nodes {
		if s != nil && s.Running() {
			out = append(out, s)
		}
	}
	return out
}

// Size is the number of nodes, running or not.
func (c *Cluster) Size() int { return len(c.opts) }

// URLs is the comma-separated client URL list of every node, as given to
// --nats-url.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.opts))
	for i := range c.opts {
		urls[i] = c.ClientURL(i)
	}
	return strings.Join(urls, ",")
}

// ClientURL is node i's client URL (0-based).
func (c *Cluster) ClientURL(i int) string {
	o := c.opts[i]
	return "nats://" + net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
}

// NodeName is node i's server name.
func (c *Cluster) NodeName(i int) string { return c.opts[i].ServerName }

// StreamLeader is the index of the node leading stream, or -1.
func (c *Cluster) StreamLeader(stream string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.nodes {
		if s != nil && s.Running() && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// Stop shuts node i down and waits until it has closed its files.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts a stopped node i again on its store directory and ports.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	running := c.nodes[i] != nil
	c.mu.Unlock()
	if running {
		return fmt.Errorf("nats node %d is running", i+1)
	}
	return c.start(i)
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for i := range c.opts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Stop(i)
		}()
	}
	wg.Wait()
}
