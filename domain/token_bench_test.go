package domain_test

import (
	"crypto/rand"
	"testing"

	"github.com/sessionledger/ledger/domain"
)

var (
	parseSIDSink  string
	parseHashSink domain.TokenHash
	parseErrSink  error
)

// BenchmarkParseToken is the first step of every validate: shape checks,
// base64 decoding of the secret and its SHA-256.
func BenchmarkParseToken(b *testing.B) {
	raw, sid, hash, err := domain.NewToken(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			parseSIDSink, parseHashSink, parseErrSink = domain.ParseToken(raw)
		}
		if parseErrSink != nil || parseSIDSink != sid || parseHashSink != hash {
			b.Fatalf("parse: %q %v", parseSIDSink, parseErrSink)
		}
	})
	b.Run("malformed", func(b *testing.B) {
		bad := raw[:len(raw)-1] + "!"
		b.ReportAllocs()
		for b.Loop() {
			_, _, parseErrSink = domain.ParseToken(bad)
		}
		if parseErrSink == nil {
			b.Fatal("want an error")
		}
	})
}

// BenchmarkNewToken is the randomness, encoding and hash of a login's token.
func BenchmarkNewToken(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := domain.NewToken(rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}
