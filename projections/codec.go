package projections

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/eventstore"
	"github.com/sessionledger/ledger/handlers/ports"
)

// Key layout. One byte of prefix per kind keeps kinds in separate ranges.
//
//	s<session id>            session state (binary, see encodeSession)
//	i<user id>\x00<t̄><sid>  a user's hot sessions: those live when the user's
//	                         last decision was applied, or revived by a late
//	                         use since (empty value). Every write loads them.
//	a<user id>\x00<t̄><sid>  all of a user's sessions (empty value)
//	                         (t̄: the session's start time, 12 bytes as in
//	                         appendTime, every bit inverted, so that both
//	                         indexes iterate newest first, then by id)
//	u<user id>               user record (JSON: email hash, password hash,
//	                         registration time, erased)
//	v<subject>               the subject's version: last sequence (8 bytes),
//	                         time of its last authentic event (12), its hash
//	e<email hash>            email -> user id and password hash (JSON), by
//	                         the hex SHA-256 of the normalized email (never
//	                         the email); dropped when the user is erased
//	c<email hash>            user id of the email's authentic claim in force
//	                         (the first; after its user's erasure, the next)
//	f<user id>               the user's recent failed logins (JSON
//	                         domain.LoginFailures); absent after a success
//	k<user id>\x00<key id>   a user's API key that is not revoked (JSON,
//	                         hash only; see apikeys.go)
//	r<user id>               the user's role, if not the default (user)
//	h<user id>\x00<purpose>  the user's latest emailed challenge of a purpose
//	                         (JSON, hashes only; see lifecycle.go)
//	g<challenge id>          the user of a challenge
//	K<credential id>         a service key or app (JSON domain.Credential),
//	                         revoked ones included
//	H<key hash>              credential id of an active key, by the SHA-256
//	                         of the raw key (32 bytes): what a presented key is looked
//	                         up by; deleted on revocation
//	mapplied                 last applied stream sequence (8 bytes)
//	mlayout                  this key layout's version (8 bytes, LayoutVersion)
//	mdigest                  stream digest at the applied sequence (32 bytes)
//	mkeys                    the log's key chain (JSON public keys)
//	mstream                  the stream's creation time as first seen
//	mrejected                how many messages were rejected (8 bytes)
//	d<seq>                   stream digest checkpoint every DigestEvery seqs
//	x<seq>                   a rejected message and why (JSON Rejected)
//	R<seq><session id>       a session the event at seq revoked (JSON
//	                         ports.Revocation): the revocation feed
const (
	prefixSession   = 's'
	prefixUserIndex = 'i' // hot sessions
	prefixAllIndex  = 'a' // all sessions
	prefixUser      = 'u'
	prefixVersion   = 'v'
	prefixEmail     = 'e'
	prefixRejected  = 'x'
	prefixDigest    = 'd'
	prefixClaim     = 'c'
	prefixFailures  = 'f'
	prefixRevoked   = 'R'
	prefixRole      = 'r'
	prefixCred      = 'K'
	prefixKeyHash   = 'H'
)

var (
	keyApplied  = []byte("mapplied")
	keyDigest   = []byte("mdigest")
	keyKeyChain = []byte("mkeys")
	keyStream   = []byte("mstream")
	keyRejected = []byte("mrejected")
	keyLayout   = []byte("mlayout")
	// keyRebuilding marks a projection a rebuild has started and not
	// finished (rebuild.go).
	keyRebuilding = []byte("mrebuilding")
)

// LayoutVersion is the version of the key layout above. A projection
// written under another layout is not read: Open refuses it with a
// *LayoutError, and it is rebuilt from the stream. Version 1 (no mlayout
// key) kept every session of a user in one index; version 2 keeps the hot
// and the all-sessions indexes, ordered newest first; version 3 adds the
// revocations (R) and the access registries (r, K, H); version 5 keys the
// email index by the email's hash and keeps no email in the user record
// (erasure).
const LayoutVersion = 5

func digestKey(seq uint64) []byte { return binary.BigEndian.AppendUint64([]byte{prefixDigest}, seq) }

func encodeVersion(v eventstore.Version) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+timeLen+len(v.Head)), v.Seq)
	b = appendTime(b, v.Time)
	return append(b, v.Head...)
}

func decodeVersion(b []byte) (eventstore.Version, error) {
	if len(b) < 8+timeLen {
		return eventstore.Version{}, fmt.Errorf("version record of %d bytes", len(b))
	}
	return eventstore.Version{Seq: binary.BigEndian.Uint64(b), Time: readTime(b[8:]), Head: string(b[8+timeLen:])}, nil
}

func sessionKey(id string) []byte      { return append([]byte{prefixSession}, id...) }
func userKey(id string) []byte         { return append([]byte{prefixUser}, id...) }
func versionKey(subject string) []byte { return append([]byte{prefixVersion}, subject...) }
func emailKey(hash string) []byte      { return append([]byte{prefixEmail}, hash...) }
func claimKey(emailHash string) []byte { return append([]byte{prefixClaim}, emailHash...) }
func failuresKey(userID string) []byte { return append([]byte{prefixFailures}, userID...) }
func roleKey(userID string) []byte     { return append([]byte{prefixRole}, userID...) }
func credKey(id string) []byte         { return append([]byte{prefixCred}, id...) }
func keyHashKey(h domain.KeyHash) []byte {
	return append([]byte{prefixKeyHash}, h[:]...)
}

// indexPrefix is where a user's entries of one session index begin
// (prefixUserIndex: hot, prefixAllIndex: all).
func indexPrefix(index byte, userID string) []byte {
	return append(append([]byte{index}, userID...), 0)
}

// indexKey is a session's entry in one of its user's indexes.
func indexKey(index byte, userID string, startedAt time.Time, sessionID string) []byte {
	return appendPosition(indexPrefix(index, userID), startedAt, sessionID)
}

// appendPosition writes where a session sorts in a user's index: its start
// time, inverted so that newer sorts first, then its id.
func appendPosition(b []byte, startedAt time.Time, sessionID string) []byte {
	n := len(b)
	b = appendTime(b, startedAt)
	for i := n; i < len(b); i++ {
		b[i] = ^b[i]
	}
	return append(b, sessionID...)
}

// sessionOfIndexKey is the session id of an index entry.
func sessionOfIndexKey(prefix, key []byte) string {
	return string(key[len(prefix)+timeLen:])
}

func rejectedKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixRejected}, seq)
}

// Rejected is a stored message the projection did not apply, and why (its
// Reason is one of the Reject* reasons).
type Rejected = ports.Rejected

// prefixEnd is the exclusive upper bound of all keys starting with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("want 8 bytes, got %d", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

type userRecord struct {
	EmailHash    string    `json:"email_hash"`
	PasswordHash string    `json:"password_hash,omitempty"`
	RegisteredAt time.Time `json:"registered_at"`
	Erased       bool      `json:"erased,omitempty"`
}

type emailRecord struct {
	UserID       string `json:"user_id"`
	PasswordHash string `json:"password_hash"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // records are plain structs
	}
	return b
}

// Session records are a fixed binary layout: validation decodes one on
// every request, so it must be cheap.
const sessionCodecVersion = 2

// Times are stored as Unix seconds and nanoseconds: UnixNano overflows in
// 2262, and a projection must not misread any time an event can carry.
const timeLen = 12

// reasonCodes: a reason's code is its index, so new reasons go last.
var reasonCodes = []domain.Reason{
	domain.ReasonNone, domain.ReasonRevokedLogout, domain.ReasonRevokedOthers, domain.ReasonRevokedTerminated,
	domain.ReasonRevokedSessionLimit, domain.ReasonRevokedAdmin,
	domain.ReasonRevokedPasswordChanged, domain.ReasonRevokedPasswordReset, // lifecycle.go
	domain.ReasonRevokedUserErased, // erase.go
}

func encodeSession(s domain.SessionSnapshot) []byte {
	b := make([]byte, 0, 1+32+1+1+4*timeLen+8+2+len(s.UserID)+len(s.Method))
	b = append(b, sessionCodecVersion)
	b = append(b, s.TokenHash[:]...)
	var flags byte
	if s.KeepLoggedIn {
		flags |= 1
	}
	if s.MFA {
		flags |= 2
	}
	b = append(b, flags)
	var reason byte
	for i, r := range reasonCodes {
		if r == s.RevokedBy {
			reason = byte(i)
		}
	}
	b = append(b, reason)
	for _, t := range []time.Time{s.StartedAt, s.MaxExpiresAt, s.LastUseAt, s.RevokedAt} {
		b = appendTime(b, t)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(s.IdleWindow))
	b = append(b, byte(len(s.UserID)))
	b = append(b, s.UserID...)
	b = append(b, byte(len(s.Method)))
	b = append(b, s.Method...)
	return b
}

var errCorruptSession = errors.New("corrupt session record")

func decodeSession(id string, b []byte) (domain.SessionSnapshot, error) {
	var s domain.SessionSnapshot
	const fixed = 1 + 32 + 1 + 1 + 4*timeLen + 8
	if len(b) < fixed+2 || b[0] != sessionCodecVersion {
		return s, errCorruptSession
	}
	s.ID = id
	copy(s.TokenHash[:], b[1:33])
	s.KeepLoggedIn = b[33]&1 != 0
	s.MFA = b[33]&2 != 0
	if int(b[34]) >= len(reasonCodes) {
		return s, errCorruptSession
	}
	s.RevokedBy = reasonCodes[b[34]]
	p := 35
	times := [4]*time.Time{&s.StartedAt, &s.MaxExpiresAt, &s.LastUseAt, &s.RevokedAt}
	for _, t := range times {
		*t = readTime(b[p:])
		p += timeLen
	}
	s.IdleWindow = time.Duration(binary.BigEndian.Uint64(b[p:]))
	p += 8
	n := int(b[p])
	p++
	if p+n+1 > len(b) {
		return s, errCorruptSession
	}
	s.UserID = string(b[p : p+n])
	p += n
	m := int(b[p])
	p++
	if p+m != len(b) {
		return s, errCorruptSession
	}
	s.Method = string(b[p:])
	return s, nil
}

// appendTime writes the zero time as all zeros.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, make([]byte, timeLen)...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func readTime(b []byte) time.Time {
	sec, nsec := int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint32(b[8:]))
	if sec == 0 && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, nsec).UTC()
}

// revocationKey orders the feed by stream sequence, then session id (one
// logout-others revokes many sessions at one sequence).
func revocationKey(seq uint64, sessionID string) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{prefixRevoked}, seq), sessionID...)
}
