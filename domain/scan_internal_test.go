package domain

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestPlain8: the eight-bytes-at-a-time scans say what the byte-by-byte
// ones say, for every byte value at every place and for random words
// (where borrows and carries between bytes could mislead them).
func TestPlain8(t *testing.T) {
	byByte := func(w [8]byte) (plain, quoteOrEscape bool) {
		plain = true
		for _, c := range w {
			plain = plain && plainASCII[c]
			quoteOrEscape = quoteOrEscape || c == '"' || c == '\\'
		}
		return plain, quoteOrEscape
	}
	check := func(w [8]byte) {
		x := binary.LittleEndian.Uint64(w[:])
		plain, qe := byByte(w)
		if plain8(x) != plain || (anyEqual(x, '"') || anyEqual(x, '\\')) != qe {
			t.Fatalf("%q: plain8 %v, quote or escape %v; byte by byte %v, %v", w, plain8(x), anyEqual(x, '"') || anyEqual(x, '\\'), plain, qe)
		}
	}
	for _, fill := range []byte{'a', 0x20, 0x7e, 0x00, 0xff, '"', '\\', 0x1f, 0x7f, 0x80} {
		for at := range 8 {
			for c := range 256 {
				w := [8]byte{fill, fill, fill, fill, fill, fill, fill, fill}
				w[at] = byte(c)
				check(w)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1 << 20 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		check(w)
		// Mostly printable, to reach the words that are all but one.
		for i := range w {
			if rng.IntN(8) != 0 {
				w[i] = byte(0x20 + rng.IntN(0x5f))
			}
		}
		check(w)
	}
}
