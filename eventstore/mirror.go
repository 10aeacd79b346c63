package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MirrorConfig is a regional read copy of the ledger stream. A JetStream
// mirror stores every message of its origin under the origin's stream
// sequence, so sequences returned by appends to the origin (the
// read-your-writes tokens) mean the same thing on the mirror.
type MirrorConfig struct {
	// Name of the mirror stream, e.g. LEDGER_EU.
	Name string
	// Origin is the stream it mirrors (default DefaultStream).
	Origin string
	// Replicas of the mirror when it is created (default 1).
	Replicas int
	// Cluster places the mirror in this NATS cluster (the region's, in a
	// super-cluster); empty lets JetStream choose.
	Cluster string
}

// MirrorStreamConfig is the mirror as the ledger creates it: append-only
// like its origin.
func MirrorStreamConfig(cfg MirrorConfig) jetstream.StreamConfig {
	origin := cfg.Origin
	if origin == "" {
		origin = DefaultStream
	}
	replicas := max(cfg.Replicas, 1)
	sc := jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "session ledger: read mirror of " + origin,
		Mirror:      &jetstream.StreamSource{Name: origin},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    replicas,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
	}
	if cfg.Cluster != "" {
		sc.Placement = &jetstream.Placement{Cluster: cfg.Cluster}
	}
	return sc
}

// OpenMirror opens the mirror stream for reading, creating it if it does
// not exist. Appends go to the origin, through a Store.
func OpenMirror(ctx context.Context, nc *nats.Conn, cfg MirrorConfig) (*Reader, error) {
	if cfg.Name == "" {
		return nil, errors.New("mirror stream needs a name")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sc := MirrorStreamConfig(cfg)
	stream, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, sc)
	}
	if err != nil {
		return nil, fmt.Errorf("open mirror stream %s: %w", sc.Name, err)
	}
	info := stream.CachedInfo().Config
	if info.Mirror == nil || info.Mirror.Name != sc.Mirror.Name {
		return nil, fmt.Errorf("stream %s exists but is not a mirror of %s", sc.Name, sc.Mirror.Name)
	}
	if !info.DenyDelete || !info.DenyPurge {
		return nil, fmt.Errorf("stream %s allows deletes or purges; the ledger must be append-only", sc.Name)
	}
	return &Reader{js: js, stream: stream, name: sc.Name}, nil
}
