// Package argon2reuse runs golang.org/x/crypto/argon2's own Argon2id on a
// caller-owned block buffer, so repeated hashes make no garbage.
//
// x/crypto allocates the whole memory of every hash (19 MiB at OWASP's
// setting) and drops it; in the server that garbage ran the collector about
// every third login, each collection marking the live heap and dropping
// nats-server's cached message block (read back by the next append), and
// the runtime's scavenger kept returning the freed pages to the kernel for
// the next hash to fault back in. No argon2 library on the module proxy
// takes a buffer (minio/argon2, a pooled fork, is not served), so this
// package links to x/crypto's unexported steps (initHash, initBlocks,
// processBlocks, extractKey) with go:linkname and hands them its own
// buffer: the hashing is x/crypto's, nothing of argon2 is written here but
// where the buffer's first blocks go.
//
// The price is a dependency on x/crypto's internals: if a step disappears
// the build fails at link time; if one changes its meaning, the tests,
// which compare IDKey with argon2.IDKey over random inputs and parameters
// on one reused buffer, fail. Bumping golang.org/x/crypto must run them.
package argon2reuse

import (
	_ "unsafe" // go:linkname

	_ "golang.org/x/crypto/argon2" // the functions linked below
	"golang.org/x/crypto/blake2b"
)

const (
	blockLength = 128
	syncPoints  = 4
	argon2id    = 2
)

type block [blockLength]uint64

//go:linkname initHash golang.org/x/crypto/argon2.initHash
func initHash(password, salt, key, data []byte, time, memory, threads, keyLen uint32, mode int) [blake2b.Size + 8]byte

//go:linkname initBlocks golang.org/x/crypto/argon2.initBlocks
func initBlocks(h0 *[blake2b.Size + 8]byte, memory, threads uint32) []block

//go:linkname processBlocks golang.org/x/crypto/argon2.processBlocks
func processBlocks(B []block, time, memory, threads uint32, mode int)

//go:linkname extractKey golang.org/x/crypto/argon2.extractKey
func extractKey(B []block, memory, threads, keyLen uint32) []byte

// Buffer is the working memory of one hash at a time.
type Buffer struct{ b []block }

// Blocks is how many 1 KiB blocks x/crypto uses for memory KiB over threads lanes.
func Blocks(memory uint32, threads uint8) uint32 {
	t := uint32(threads)
	m := memory / (syncPoints * t) * (syncPoints * t)
	return max(m, 2*syncPoints*t)
}

// NewBuffer is enough memory for IDKey(…, memory, threads, …).
func NewBuffer(memory uint32, threads uint8) *Buffer {
	return &Buffer{b: make([]block, Blocks(memory, threads))}
}

// Size is how many 1 KiB blocks buf holds now.
func (buf *Buffer) Size() uint32 { return uint32(len(buf.b)) }

// IDKey is argon2.IDKey on buf's memory (grown if too small).
func IDKey(buf *Buffer, password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	if time < 1 {
		panic("argon2: number of rounds too small")
	}
	if threads < 1 {
		panic("argon2: parallelism degree too low")
	}
	t := uint32(threads)
	h0 := initHash(password, salt, nil, nil, time, memory, t, keyLen, argon2id)
	m := Blocks(memory, threads)
	if uint32(len(buf.b)) < m {
		buf.b = make([]block, m)
	}
	B := buf.b[:m]
	// x/crypto's first pass XORs each new block into its slot, counting on
	// make's zeroes. (The buffer keeps this hash's memory until its next
	// use, as the garbage of a fresh buffer did until it was reused.)
	clear(B)
	// The first two blocks of each lane, from x/crypto over the smallest
	// memory that holds them (lane i's at 2i), placed where lane i starts.
	first := initBlocks(&h0, 2*t, t)
	lanes := m / t
	for lane := range t {
		B[lane*lanes] = first[2*lane]
		B[lane*lanes+1] = first[2*lane+1]
	}
	processBlocks(B, time, m, t, argon2id)
	return extractKey(B, m, t, keyLen)
}
