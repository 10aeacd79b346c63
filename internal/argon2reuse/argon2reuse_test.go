package argon2reuse

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestIDKeyMatchesXCrypto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := NewBuffer(8, 1)
	for i := range 300 {
		pw := make([]byte, r.IntN(40))
		salt := make([]byte, 8+r.IntN(24))
		for j := range pw {
			pw[j] = byte(r.Uint32())
		}
		for j := range salt {
			salt[j] = byte(r.Uint32())
		}
		time := uint32(1 + r.IntN(3))
		threads := uint8(1 + r.IntN(4))
		memory := uint32(1 + r.IntN(300))
		keyLen := uint32(1 + r.IntN(100))
		want := argon2.IDKey(pw, salt, time, memory, threads, keyLen)
		got := IDKey(buf, pw, salt, time, memory, threads, keyLen)
		if !bytes.Equal(got, want) {
			t.Fatalf("#%d t=%d m=%d p=%d len=%d: %x, want %x", i, time, memory, threads, keyLen, got, want)
		}
	}
}

// OWASP's setting, the server's, on a buffer reused across calls and sizes.
func TestIDKeyOWASPReused(t *testing.T) {
	buf := NewBuffer(8, 1)
	for i := range 3 {
		pw, salt := []byte{byte(i), 'p', 'w'}, []byte("0123456789abcdef")
		want := argon2.IDKey(pw, salt, 2, 19*1024, 1, 32)
		if got := IDKey(buf, pw, salt, 2, 19*1024, 1, 32); !bytes.Equal(got, want) {
			t.Fatalf("#%d: %x, want %x", i, got, want)
		}
	}
	if got := len(buf.b); got != 19*1024 {
		t.Fatalf("buffer of %d blocks after growing to OWASP's, want %d", got, 19*1024)
	}
}
