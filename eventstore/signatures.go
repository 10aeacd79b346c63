package eventstore

import (
	"crypto/ed25519"

	voied25519 "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"github.com/sessionledger/ledger/domain"
)

// verifySignatures is domain.VerifySignature for each of events under the
// key of the same index, with the same verdicts, at a fraction of the cost
// when they all verify (an auditor's case): the signatures are first
// checked together with Ed25519 batch verification (curve25519-voi: about
// 10 µs a signature in batches of 2048 against 58 µs one by one with
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
	bv := voied25519.NewBatchVerifierWithCapacity(len(events))
	expanded := map[string]*voied25519.ExpandedPublicKey{}
	ok := true
	for i, e := range events {
		sig, wellFormed := domain.SignatureBytes(e)
		if !wellFormed || len(keys[i].Key) != ed25519.PublicKeySize {
			ok = false
			break
		}
		x, seen := expanded[string(keys[i].Key)]
		if !seen {
			var err error
			if x, err = voied25519.NewExpandedPublicKey(voied25519.PublicKey(keys[i].Key)); err != nil {
				ok = false
				break
			}
			expanded[string(keys[i].Key)] = x
		}
		bv.AddExpandedWithOptions(x, domain.SignedMessage(e.Hash), sig[:], batchOptions)
	}
	if ok && bv.VerifyBatchOnly(nil) {
		return errs
	}
	for i, e := range events {
		errs[i] = domain.VerifySignature(e, keys[i])
	}
	return errs
}

// batchOptions: plain Ed25519 (no context, no pre-hash), cofactored (what
// batch verification needs), canonical encodings only.
var batchOptions = &voied25519.Options{Verify: voied25519.VerifyOptionsFIPS_186_5}
