package eventstore

import (
	"bytes"
	"crypto/ed25519"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"hash"
	mathrand "math/rand/v2"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/curve/scalar"
	"github.com/sessionledger/ledger/domain"
)

// verifySignatures is domain.VerifySignature for each of events under the
// key of the same index, with the same verdicts, at a fraction of the cost
// when they all verify (an auditor's case): the signatures are first
// checked together with Ed25519 batch verification (batchHolds: about
// 7 µs a signature in batches of 2048 against 58 µs one by one with
// crypto/ed25519, on the bench machine), and only if the batch fails is
// each checked on its own with domain.VerifySignature, whose verdict then
// stands. A batch accepts only what VerifySignature accepts: it requires
// the canonical encodings of R and S that crypto/ed25519 requires, and
// checks the cofactored equation where crypto/ed25519 checks the
// cofactorless one; the two differ only on signatures with a small-order
// component, which nobody can make for a message without the private key
// (that is forging Ed25519), and which the ledger's writers, signing with
// crypto/ed25519, never make.
func verifySignatures(events []domain.Event, keys []domain.PublicKey) []error {
	errs := make([]error, len(events))
	if len(events) == 0 {
		return errs
	}
	if batchHolds(events, keys) {
		return errs
	}
	for i, e := range events {
		errs[i] = domain.VerifySignature(e, keys[i])
	}
	return errs
}

// batchHolds reports whether Ed25519's cofactored batch equation holds for
// events' signatures under keys:
//
//	[8]( -[Σ z_i·s_i]B + Σ [z_i]R_i + Σ over each key A of [Σ z_i·k_i]A ) = 0
//
// with (R_i, s_i) the i-th signature, k_i = SHA-512(R_i || A_i || M_i)
// (M_i: domain.SignedMessage of the event's hash) and z_i independent
// random scalars in [1, 2^128]: RFC 8032's cofactored equation of each
// signature, times z_i, summed. A batch holding a signature that does not
// verify passes only if the random z_i happen to cancel its error, with a
// probability of about 2^-128. It is the equation curve25519-voi's batch
// verifier checks (its VerifyOptionsFIPS_186_5: canonical R, s and A
// only), built from the same library's curve arithmetic, except that the
// terms of one public key are added up into one: the signatures verify
// handles are nearly all under one key, so the multiscalar multiplication
// (Pippenger's method, the batch's largest cost after decompressing each
// R) has n+2 points instead of 2n+1, which took a signature from about 11
// to about 7 µs in batches of 2048. False: some signature does not verify
// or is not in that canonical form (then verifySignatures checks each).
func batchHolds(events []domain.Event, keys []domain.PublicKey) bool {
	if len(keys) != len(events) {
		return false
	}
	return batchEquationHolds(len(events), func(i int) ([ed25519.SignatureSize]byte, []byte, bool) {
		sig, wellFormed := domain.SignatureBytes(events[i])
		return sig, keys[i].Key, wellFormed
	}, func(i int, h hash.Hash) { h.Write(domain.SignedMessage(events[i].Hash)) })
}

// headSig is a subject's head as far as its signature goes, kept as bytes
// (see verifyHead): the event's hash, its well-formed signature and the
// key in force at its place.
type headSig struct {
	hash [sha256.Size]byte
	sig  [ed25519.SignatureSize]byte
	key  domain.PublicKey
}

// event is the head as stored, as far as its signature goes.
func (h *headSig) event() domain.Event {
	return domain.Event{Hash: "sha256:" + hex.EncodeToString(h.hash[:]), Sig: domain.SignatureText(h.sig)}
}

// headMessagePrefix is what domain.SignedMessage puts before a hash's hex
// digits: a head's message is written from its bytes, without spelling
// its hash and signature as text first (which took as long as a tenth of
// checking them).
var headMessagePrefix = domain.SignedMessage("sha256:")

// headsBatchHolds is batchHolds for heads, each message written from the
// head's hash bytes. A wrong message would only send every head to the
// one-by-one check (the verdicts stand, at about nine times the cost), so
// TestHeadsBatchHoldsOnValidHeads holds it to valid heads.
func headsBatchHolds(heads []headSig) bool {
	return batchEquationHolds(len(heads), func(i int) ([ed25519.SignatureSize]byte, []byte, bool) {
		return heads[i].sig, heads[i].key.Key, true
	}, func(i int, h hash.Hash) {
		var text [2 * sha256.Size]byte
		hex.Encode(text[:], heads[i].hash[:])
		h.Write(headMessagePrefix)
		h.Write(text[:])
	})
}

// verifyHeadSigs is verifySignatures for heads: true where the head's
// signature verifies, the verdict domain.VerifySignature gives the event
// as stored (headSig.event), which it gives each one when the batch fails.
func verifyHeadSigs(heads []headSig) []bool {
	ok := make([]bool, len(heads))
	if len(heads) == 0 {
		return ok
	}
	holds := headsBatchHolds(heads)
	for i := range heads {
		ok[i] = holds || domain.VerifySignature(heads[i].event(), heads[i].key) == nil
	}
	return ok
}

// batchEquationHolds is batchHolds for n signatures: sigOf gives the i-th
// signature, its public key and whether it is well formed, and msg writes
// its message.
func batchEquationHolds(n int, sigOf func(i int) ([ed25519.SignatureSize]byte, []byte, bool), msg func(i int, h hash.Hash)) bool {
	if n == 0 {
		return false
	}
	// The z_i must be unpredictable to whoever wrote the signatures: a
	// ChaCha8 stream seeded from the system's generator.
	var seed [32]byte
	if _, err := cryptorand.Read(seed[:]); err != nil {
		return false
	}
	rng := mathrand.NewChaCha8(seed)
	type keyTerm struct {
		key   []byte
		A     curve.EdwardsPoint
		coeff scalar.Scalar // Σ z_i·k_i over its signatures
	}
	var terms []*keyTerm // a rotation puts two in a batch, rarely more
	term := func(key []byte) *keyTerm {
		for _, t := range terms {
			if bytes.Equal(t.key, key) {
				return t
			}
		}
		var c curve.CompressedEdwardsY
		if _, err := c.SetBytes(key); err != nil || !c.IsCanonicalVartime() {
			return nil
		}
		t := &keyTerm{key: key}
		if _, err := t.A.SetCompressedY(&c); err != nil {
			return nil
		}
		terms = append(terms, t)
		return t
	}
	R := make([]curve.EdwardsPoint, n)
	z := make([]scalar.Scalar, n)
	points := make([]*curve.EdwardsPoint, 0, n+3)
	scalars := make([]*scalar.Scalar, 0, n+3)
	var bCoeff scalar.Scalar // Σ z_i·s_i
	h := sha512.New()
	var digest [sha512.Size]byte
	for i := range n {
		sig, key, wellFormed := sigOf(i)
		if !wellFormed || len(key) != ed25519.PublicKeySize {
			return false
		}
		t := term(key)
		if t == nil {
			return false
		}
		var s scalar.Scalar
		if _, err := s.SetCanonicalBytes(sig[32:]); err != nil { // s < L
			return false
		}
		var rc curve.CompressedEdwardsY
		if _, err := rc.SetBytes(sig[:32]); err != nil || !rc.IsCanonicalVartime() {
			return false
		}
		if _, err := R[i].SetCompressedY(&rc); err != nil {
			return false
		}
		h.Reset()
		h.Write(sig[:32])
		h.Write(t.key)
		msg(i, h)
		var k scalar.Scalar
		if _, err := k.SetBytesModOrderWide(h.Sum(digest[:0])); err != nil {
			return false
		}
		var zb [scalar.ScalarSize]byte
		binary.LittleEndian.PutUint64(zb[0:], rng.Uint64())
		binary.LittleEndian.PutUint64(zb[8:], rng.Uint64())
		if zb == ([scalar.ScalarSize]byte{}) {
			zb[16] = 1 // 0 stands for 2^128
		}
		if _, err := z[i].SetBits(zb[:]); err != nil {
			return false
		}
		var zs, zk scalar.Scalar
		bCoeff.Add(&bCoeff, zs.Mul(&z[i], &s))
		t.coeff.Add(&t.coeff, zk.Mul(&z[i], &k))
		points = append(points, &R[i])
		scalars = append(scalars, &z[i])
	}
	bCoeff.Neg(&bCoeff)
	points = append(points, curve.ED25519_BASEPOINT_POINT)
	scalars = append(scalars, &bCoeff)
	for _, t := range terms {
		points = append(points, &t.A)
		scalars = append(scalars, &t.coeff)
	}
	var sum curve.EdwardsPoint
	return sum.MultiscalarMulVartime(scalars, points).IsSmallOrder()
}
