package command

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/alexedwards/argon2id"
)

// Small parameters keep the test fast; the buffers are exercised the same.
var testParams = argon2id.Params{Memory: 64, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// The hashes stay argon2id.CreateHash's: stored hashes from before verify
// here, and hashes made here verify with the library.
func TestArgon2idCompatibleWithLibrary(t *testing.T) {
	h, err := NewArgon2id(testParams, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		pw := fmt.Sprintf("password %d", i)
		params := testParams
		params.Parallelism = uint8(1 + i%3) // a stored hash may carry other parameters
		params.Memory = uint32(32 + 8*i)
		stored, err := argon2id.CreateHash(pw, &params)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := h.Verify(pw, stored); err != nil || !ok {
			t.Fatalf("library hash %d: Verify = %v, %v; want true", i, ok, err)
		}
		if ok, err := h.Verify(pw+"x", stored); err != nil || ok {
			t.Fatalf("library hash %d, wrong password: Verify = %v, %v; want false", i, ok, err)
		}
		ours, err := h.Hash(pw)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := argon2id.ComparePasswordAndHash(pw, ours); err != nil || !ok {
			t.Fatalf("hash %d checked by the library: %v, %v; want true", i, ok, err)
		}
		if ok, err := argon2id.ComparePasswordAndHash(pw+"x", ours); err != nil || ok {
			t.Fatalf("hash %d checked by the library, wrong password: %v, %v; want false", i, ok, err)
		}
	}
	if _, err := h.Verify("pw", "$argon2id$v=19$m=64,t=2,p=1$not base64!$x"); err == nil {
		t.Fatal("Verify of a malformed hash: no error")
	}
}

// A hasher that has checked no password keeps no buffer (the dummy hash
// made at start does not stay).
func TestArgon2idKeepsNothingUntilUsed(t *testing.T) {
	h, err := NewArgon2id(testParams, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(h.bufs); n != 0 {
		t.Fatalf("%d buffers kept before any check, want 0", n)
	}
	if err := h.Burn("pw"); err != nil {
		t.Fatal(err)
	}
	if n := len(h.bufs); n != 1 {
		t.Fatalf("%d buffers kept after one check, want 1", n)
	}
}

// More callers than kept buffers: each hash still gets a buffer of its own.
func TestArgon2idConcurrentCallers(t *testing.T) {
	h, err := NewArgon2id(testParams, 2)
	if err != nil {
		t.Fatal(err)
	}
	const callers = 6
	hashes := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for range 5 {
				hashes[i], _ = h.Hash(fmt.Sprint("pw", i))
			}
		})
	}
	wg.Wait()
	for i, s := range hashes {
		if ok, err := argon2id.ComparePasswordAndHash(fmt.Sprint("pw", i), s); err != nil || !ok {
			t.Fatalf("caller %d: %q does not verify (%v)", i, s, err)
		}
	}
	if n := len(h.bufs); n > cap(h.bufs) || n == 0 {
		t.Fatalf("%d buffers kept, want 1..%d", n, cap(h.bufs))
	}
	if _, err := NewArgon2id(testParams, 0); err == nil {
		t.Fatal("NewArgon2id with no buffers: no error")
	}
}

// The server's hasher against the library it replaced, at OWASP's setting,
// from as many goroutines as GOMAXPROCS (as many as the server's default
// hash slots): the pooled one makes no 19 MiB of garbage per hash.
func BenchmarkArgon2idHash(b *testing.B) {
	h, err := NewArgon2id(OWASPParams, runtime.GOMAXPROCS(0))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Hash("benchmark password"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkArgon2idLibraryCreateHash(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := argon2id.CreateHash("benchmark password", &OWASPParams); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A stored hash of larger parameters is verified on a buffer grown for it,
// which is then not kept: the pool holds only buffers of the hasher's size.
func TestArgon2idKeepsNoGrownBuffer(t *testing.T) {
	h, err := NewArgon2id(testParams, 2)
	if err != nil {
		t.Fatal(err)
	}
	big := testParams
	big.Memory = 4096
	stored, err := argon2id.CreateHash("pw", &big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Hash("warm the pool"); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.Verify("pw", stored); err != nil || !ok {
		t.Fatalf("Verify = %v, %v; want true", ok, err)
	}
	for len(h.bufs) > 0 {
		if b := <-h.bufs; b.Size() > testParams.Memory {
			t.Fatalf("pool kept a buffer of %d blocks, want at most %d", b.Size(), testParams.Memory)
		}
	}
}

// Stored hashes x/crypto would panic on, or that any key would match, are
// errors.
func TestArgon2idRefusesDegenerateStoredHashes(t *testing.T) {
	h, err := NewArgon2id(testParams, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, stored := range []string{
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U",
		"$argon2id$v=19$m=64,t=2,p=0$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U",
		"$argon2id$v=19$m=64,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$",
	} {
		if ok, err := h.Verify("pw", stored); err == nil || ok {
			t.Errorf("%s: Verify = %v, %v; want an error", stored, ok, err)
		}
	}
}
