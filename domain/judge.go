package domain

import (
	"errors"
	"fmt"
)

// Why a stored message is not applied. The projection records these, the
// audit marks them, metrics count them by these names.
const (
	RejectDecode    = "decode"    // not a readable event
	RejectHash      = "hash"      // content does not match its hash
	RejectChain     = "chain"     // does not link to its subject's last authentic event
	RejectSignature = "signature" // not authenticated by the signing key in force
	RejectInvalid   = "invalid"   // authentic, but the rules refuse it
)

// Judge is the one rule for whether a decoded event is the ledger's own at
// its place in the log: its content matches its hash, it links to head (the
// hash of its subject's last authentic event), and authenticate accepts it.
// Authentication comes last because it folds key events into the key
// chain. It returns the reason the event is rejected (one of the Reject*
// reasons) and why, or "" and nil; an error matching ErrKeyUnavailable is
// not a verdict and comes back with no reason, for the caller to wait on.
func Judge(e Event, head string, authenticate func(Event) error) (reason string, err error) {
	return JudgeHashed(e, e.CheckHash(), head, authenticate)
}

// JudgeHashed is Judge for a caller that has already run e.CheckHash()
// (ahead of the log order, on another core: the hash depends on nothing
// but the event) and passes what it returned as hashErr. The verdict is
// Judge's.
func JudgeHashed(e Event, hashErr error, head string, authenticate func(Event) error) (reason string, err error) {
	if hashErr != nil {
		return RejectHash, hashErr
	}
	if e.PrevHash != head {
		return RejectChain, fmt.Errorf("event %s links to %q, but its subject's last authentic event is %q", e.ID, e.PrevHash, head)
	}
	switch err := authenticate(e); {
	case err == nil:
		return "", nil
	case errors.Is(err, ErrNotAuthentic):
		return RejectSignature, err
	default:
		return "", err
	}
}
