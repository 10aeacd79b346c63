package eventstore

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"maps"
	mathrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	voied25519 "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"github.com/sessionledger/ledger/domain"
)

// signedUses are n uses signed by k1, every secondEvery-th (from the first)
// by k2 instead, with the key each is signed under.
func signedUses(t *testing.T, n, secondEvery int) (events []domain.Event, keys []domain.PublicKey, k1, k2 domain.SigningKey) {
	t.Helper()
	k1, _ = domain.NewSigningKey(bytes.Repeat([]byte{1}, 32))
	k2, _ = domain.NewSigningKey(bytes.Repeat([]byte{2}, 32))
	for i := range n {
		k := k1
		if i%secondEvery == 0 {
			k = k2
		}
		e := domain.SessionUse("u", "s", time.Unix(int64(i), 0))
		e.ID = fmt.Sprint(i)
		if err := e.Seal("", k); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
		keys = append(keys, k.Public())
	}
	return events, keys, k1, k2
}

// addL adds the group order L to a signature's S (its last 32 bytes,
// little-endian): the same equation with S not reduced, which
// crypto/ed25519 and a canonical batch refuse.
func addL(sig []byte) {
	l := []byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	var carry int
	for i := range 32 {
		v := int(sig[32+i]) + int(l[i]) + carry
		sig[32+i], carry = byte(v), v>>8
	}
}

// TestVerifySignaturesAgreesOneByOne: a batch gives each event the verdict
// domain.VerifySignature gives it, whether the batch passes or one bad
// signature (wrong key, another event's signature, malformed, S not
// reduced) sends it back to checking each.
func TestVerifySignaturesAgreesOneByOne(t *testing.T) {
	// More than 95 signatures: curve25519-voi then multiplies with
	// Pippenger's method rather than Straus's (checked on 70 below); a
	// batch may span a rotation.
	events, keys, _, k2 := signedUses(t, 300, 3)
	check := func(t *testing.T, events []domain.Event, keys []domain.PublicKey, bad ...int) {
		t.Helper()
		errs := verifySignatures(events, keys)
		for i, e := range events {
			want := domain.VerifySignature(e, keys[i])
			if (errs[i] == nil) != (want == nil) || (errs[i] != nil && errs[i].Error() != want.Error()) {
				t.Fatalf("event %d: batch says %v, one by one %v", i, errs[i], want)
			}
			if (want != nil) != slices.Contains(bad, i) {
				t.Fatalf("event %d: %v, bad are %v", i, want, bad)
			}
		}
	}
	check(t, events, keys)
	check(t, events[:70], keys[:70])
	check(t, nil, nil)
	tamper := func(i int, f func(*domain.Event, *domain.PublicKey)) ([]domain.Event, []domain.PublicKey) {
		ev, ks := slices.Clone(events), slices.Clone(keys)
		f(&ev[i], &ks[i])
		return ev, ks
	}
	ev, ks := tamper(5, func(_ *domain.Event, k *domain.PublicKey) { *k = k2.Public() })
	check(t, ev, ks, 5)
	ev, ks = tamper(40, func(e *domain.Event, _ *domain.PublicKey) { e.Sig = events[41].Sig })
	check(t, ev, ks, 40)
	check(t, ev[:70], ks[:70], 40)
	ev, ks = tamper(250, func(e *domain.Event, _ *domain.PublicKey) { e.Sig = events[41].Sig })
	check(t, ev, ks, 250)
	ev, ks = tamper(7, func(e *domain.Event, _ *domain.PublicKey) { e.Sig = e.Sig[:20] })
	check(t, ev, ks, 7)
	ev, ks = tamper(8, func(e *domain.Event, _ *domain.PublicKey) {
		// S + L: the same equation, but S not reduced, which
		// crypto/ed25519 refuses.
		sig, _ := base64.RawURLEncoding.DecodeString(e.Sig)
		addL(sig)
		e.Sig = base64.RawURLEncoding.EncodeToString(sig)
	})
	check(t, ev, ks, 8)
}

// TestCheckHeadsAcrossBatches: with unchecked heads for more than two
// batches (the last one partial), every one is checked once and exactly the
// subjects whose head's signature fails (two, signed with the other key
// than the head's index names) are reported, whatever batches the map's
// order puts them in.
func TestCheckHeadsAcrossBatches(t *testing.T) {
	k1, _ := domain.NewSigningKey(bytes.Repeat([]byte{1}, 32))
	k2, _ := domain.NewSigningKey(bytes.Repeat([]byte{2}, 32))
	keys := []domain.PublicKey{k1.Public(), k2.Public()}
	const n = 2*2048 + 300
	heads := map[string]verifyHead{}
	var bad []string
	for i := range n {
		h := verifyHead{set: true, unchecked: i%7 != 0, key: uint16(i % 2)}
		h.hash = sha256.Sum256([]byte(fmt.Sprint(i)))
		signer := []domain.SigningKey{k1, k2}[h.key]
		subject := fmt.Sprintf("ledger.user.%d", i)
		if h.unchecked && (i == 3001 || i == n-2) {
			signer = []domain.SigningKey{k2, k1}[h.key] // the other key
			bad = append(bad, subject)
		}
		copy(h.sig[:], ed25519.Sign(signer.Private(), domain.SignedMessage(h.hashString())))
		heads[subject] = h
	}
	var signatures uint64
	failed := checkHeads(maps.All(heads), keys, 2, &signatures)
	slices.Sort(failed)
	slices.Sort(bad)
	if !slices.Equal(failed, bad) || len(bad) != 2 {
		t.Fatalf("failed %v, want %v", failed, bad)
	}
	if want := uint64(n - (n+6)/7); signatures != want {
		t.Fatalf("%d signatures checked, want %d", signatures, want)
	}
}

// TestBatchHolds: the batch equation holds for batches of valid signatures
// (under one key or two, in batches small enough for Straus's method and
// large enough for Pippenger's), and fails as soon as one signature does
// not verify or is not canonical, as curve25519-voi's own batch verifier
// (FIPS 186-5 options) says; verifySignatures' verdicts alone would not
// show a batch that always fails.
func TestBatchHolds(t *testing.T) {
	events, keys, k1, k2 := signedUses(t, 300, 5)
	voi := func(events []domain.Event, keys []domain.PublicKey) bool {
		bv := voied25519.NewBatchVerifier()
		for i, e := range events {
			sig, _ := domain.SignatureBytes(e)
			bv.AddWithOptions(voied25519.PublicKey(keys[i].Key), domain.SignedMessage(e.Hash), sig[:],
				&voied25519.Options{Verify: voied25519.VerifyOptionsFIPS_186_5})
		}
		return bv.VerifyBatchOnly(nil)
	}
	check := func(name string, events []domain.Event, keys []domain.PublicKey, want bool) {
		t.Helper()
		if got := batchHolds(events, keys); got != want {
			t.Errorf("%s: batchHolds %v, want %v", name, got, want)
		}
		if v := voi(events, keys); v != want {
			t.Errorf("%s: curve25519-voi says %v, want %v", name, v, want)
		}
	}
	check("300, two keys", events, keys, true)
	check("70", events[:70], keys[:70], true)
	check("one", events[1:2], keys[1:2], true)
	check("one key only", events[1:5], keys[1:5], true)
	if batchHolds(nil, nil) {
		t.Error("an empty batch holds")
	}
	sigWith := func(e *domain.Event, f func(sig []byte)) {
		sig, _ := base64.RawURLEncoding.DecodeString(e.Sig)
		f(sig)
		e.Sig = base64.RawURLEncoding.EncodeToString(sig)
	}
	for _, at := range []int{0, 1, 69, 299} {
		tampers := map[string]func(*domain.Event, *domain.PublicKey){
			"other key": func(_ *domain.Event, k *domain.PublicKey) {
				*k = map[bool]domain.PublicKey{true: k1.Public(), false: k2.Public()}[k.ID == k2.Public().ID]
			},
			"another's sig":    func(e *domain.Event, _ *domain.PublicKey) { e.Sig = events[(at+10)%300].Sig },
			"other hash":       func(e *domain.Event, _ *domain.PublicKey) { e.Hash = events[(at+10)%300].Hash },
			"bit flipped in s": func(e *domain.Event, _ *domain.PublicKey) { sigWith(e, func(sig []byte) { sig[40] ^= 1 }) },
			"bit flipped in R": func(e *domain.Event, _ *domain.PublicKey) { sigWith(e, func(sig []byte) { sig[3] ^= 1 }) },
			"s + L": func(e *domain.Event, _ *domain.PublicKey) {
				sigWith(e, addL)
			},
			"R not canonical": func(e *domain.Event, _ *domain.PublicKey) {
				// y = p + 1: the point (0, 1), spelt the long way.
				sigWith(e, func(sig []byte) {
					copy(sig[:32], []byte{0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
						0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
				})
			},
			"malformed": func(e *domain.Event, _ *domain.PublicKey) { e.Sig = e.Sig[:20] },
		}
		for name, f := range tampers {
			ev, ks := slices.Clone(events), slices.Clone(keys)
			f(&ev[at], &ks[at])
			check(fmt.Sprintf("%s at %d of 300", name, at), ev, ks, false)
			if at < 70 {
				check(fmt.Sprintf("%s at %d of 70", name, at), ev[:70], ks[:70], false)
			}
		}
	}
}

var batchSeed = flag.Uint64("batch-seed", 0, "seed of TestBatchHoldsAgreesWithVoiOnRandomDamage (0: a new one, printed)")

// TestBatchHoldsAgreesWithVoiOnRandomDamage: on random batches (sizes on
// both sides of the switch from Straus's to Pippenger's method, up to three
// keys) with random damage (a bit of the signature, of the hash or of the
// key flipped, two signatures swapped, a key swapped, R replaced by a
// small-order point), batchHolds says what curve25519-voi's own batch
// verifier says, and a batch that holds has only signatures crypto/ed25519
// accepts one by one. It prints its seed; -batch-seed replays one.
func TestBatchHoldsAgreesWithVoiOnRandomDamage(t *testing.T) {
	seed := *batchSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -batch-seed %d)", seed, seed)
	r := mathrand.New(mathrand.NewPCG(seed, 17))
	var signers []domain.SigningKey
	for i := range 3 {
		k, err := domain.NewSigningKey(bytes.Repeat([]byte{byte(10 + i)}, 32))
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, k)
	}
	voi := func(events []domain.Event, keys []domain.PublicKey) bool {
		bv := voied25519.NewBatchVerifier()
		for i, e := range events {
			sig, ok := domain.SignatureBytes(e)
			if !ok {
				return false
			}
			bv.AddWithOptions(voied25519.PublicKey(keys[i].Key), domain.SignedMessage(e.Hash), sig[:],
				&voied25519.Options{Verify: voied25519.VerifyOptionsFIPS_186_5})
		}
		return bv.VerifyBatchOnly(nil)
	}
	rawSig := func(e *domain.Event, f func(sig []byte)) {
		sig, _ := base64.RawURLEncoding.DecodeString(e.Sig)
		f(sig)
		e.Sig = base64.RawURLEncoding.EncodeToString(sig)
	}
	damages := []func(events []domain.Event, keys []domain.PublicKey, i int){
		func(ev []domain.Event, _ []domain.PublicKey, i int) { // a bit of the signature
			rawSig(&ev[i], func(sig []byte) { sig[r.IntN(64)] ^= 1 << r.IntN(8) })
		},
		func(ev []domain.Event, _ []domain.PublicKey, i int) { // a bit of the hash
			h := []byte(ev[i].Hash)
			h[len(h)-1-r.IntN(64)] ^= 1
			ev[i].Hash = string(h)
		},
		func(_ []domain.Event, ks []domain.PublicKey, i int) { // a bit of the key
			k := bytes.Clone(ks[i].Key)
			k[r.IntN(32)] ^= 1 << r.IntN(8)
			ks[i].Key = k
		},
		func(ev []domain.Event, _ []domain.PublicKey, i int) { // two signatures swapped
			j := r.IntN(len(ev))
			ev[i].Sig, ev[j].Sig = ev[j].Sig, ev[i].Sig
		},
		func(_ []domain.Event, ks []domain.PublicKey, i int) { // another signer's key
			ks[i] = signers[r.IntN(len(signers))].Public()
		},
		func(ev []domain.Event, _ []domain.PublicKey, i int) { // R: the identity, a small-order point
			rawSig(&ev[i], func(sig []byte) { clear(sig[:32]); sig[0] = 1 })
		},
	}
	holds, damaged := 0, 0
	for round := range 200 {
		n := 1 + r.IntN(200)
		events := make([]domain.Event, n)
		keys := make([]domain.PublicKey, n)
		nkeys := 1 + r.IntN(len(signers))
		for i := range n {
			k := signers[r.IntN(nkeys)]
			e := domain.SessionUse(fmt.Sprint("u", r.IntN(50)), fmt.Sprint("s", i), time.Unix(r.Int64N(1<<31), 0))
			e.ID = fmt.Sprint(round, "-", i)
			if err := e.Seal("", k); err != nil {
				t.Fatal(err)
			}
			events[i], keys[i] = e, k.Public()
		}
		if r.IntN(3) > 0 {
			for range 1 + r.IntN(2) {
				at := []int{0, n - 1, r.IntN(n)}[r.IntN(3)] // the ends are where off-by-ones live
				damages[r.IntN(len(damages))](events, keys, at)
			}
		}
		got, want := batchHolds(events, keys), voi(events, keys)
		if got != want {
			t.Fatalf("round %d (%d signatures, %d keys): batchHolds %v, curve25519-voi %v", round, n, nkeys, got, want)
		}
		oneByOne := true
		for i, e := range events {
			oneByOne = oneByOne && domain.VerifySignature(e, keys[i]) == nil
		}
		if got && !oneByOne {
			t.Fatalf("round %d: the batch holds but a signature fails on its own", round)
		}
		if got {
			holds++
		}
		if !oneByOne {
			damaged++
		}
	}
	// Positive controls: the rounds must have had both outcomes.
	if holds == 0 || damaged == 0 {
		t.Fatalf("%d batches held, %d had a bad signature: the workload did not test both sides", holds, damaged)
	}
}

// TestHeadsBatchHoldsOnValidHeads: heads of valid events pass as a batch,
// not only through the one-by-one fallback, and one damaged signature
// fails the batch.
func TestHeadsBatchHoldsOnValidHeads(t *testing.T) {
	events, keys, _, _ := signedUses(t, 64, 5)
	heads := make([]headSig, len(events))
	for i, e := range events {
		sum, err := hex.DecodeString(strings.TrimPrefix(e.Hash, "sha256:"))
		sig, ok := domain.SignatureBytes(e)
		if err != nil || len(sum) != sha256.Size || !ok {
			t.Fatalf("event %d: hash %q, signature well formed %v", i, e.Hash, ok)
		}
		heads[i] = headSig{hash: [sha256.Size]byte(sum), sig: sig, key: keys[i]}
	}
	if !headsBatchHolds(heads) {
		t.Fatal("valid heads fail as a batch")
	}
	heads[17].sig[3] ^= 1
	if headsBatchHolds(heads) {
		t.Fatal("a batch with a damaged signature holds")
	}
}
