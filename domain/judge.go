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
	return authentic(e, authenticate)
}

// JudgeUse is Judge for a message on a user's use subject, which holds
// nothing but that user's session_used events, each standing alone. A use
// only ever moves a live session's idle deadline later (Session.Apply: it
// cannot revive a dead session), so uses fold as a maximum: a lost use can
// only end a session sooner, and their order changes nothing. They therefore
// need neither a chain nor the user's expected-sequence check, and writers
// on several instances may append them concurrently. What stands in for the
// chain: the event links to no predecessor (a link would fork as soon as
// two writers raced), is a session_used of userID (the subject's user), and
// is authenticated by the key in force like any other event. The rules come
// before authentication so that no other kind of event, a key event least
// of all, is ever folded into the key chain from a use subject.
func JudgeUse(e Event, hashErr error, userID string, authenticate func(Event) error) (reason string, err error) {
	switch {
	case hashErr != nil:
		return RejectHash, hashErr
	case e.PrevHash != "":
		return RejectChain, fmt.Errorf("event %s on a use subject links to %q: uses stand alone", e.ID, e.PrevHash)
	case e.Type != EventSessionUsed:
		return RejectInvalid, fmt.Errorf("event %s: a use subject holds only %s events, not %s", e.ID, EventSessionUsed, e.Type)
	case e.UserID != userID || e.SessionID == "":
		return RejectInvalid, fmt.Errorf("event %s: a use of user %q's session %q on the use subject of user %q", e.ID, e.UserID, e.SessionID, userID)
	}
	return authentic(e, authenticate)
}

// authentic is the last check of every judgment: a signature (or MAC) that
// does not verify is a rejection; any other failure (the key in force is
// not held here) is an error, and no verdict.
func authentic(e Event, authenticate func(Event) error) (reason string, err error) {
	switch err := authenticate(e); {
	case err == nil:
		return "", nil
	case errors.Is(err, ErrNotAuthentic):
		return RejectSignature, err
	default:
		return "", err
	}
}
