package domain

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"time"
)

// EventType names a fact in the log. The catalogue, with examples, is in
// docs/events.md; keep the two in step.
type EventType string

const (
	EventEmailClaimed         EventType = "email_claimed"
	EventUserRegistered       EventType = "user_registered"
	EventSessionStarted       EventType = "session_started"
	EventSessionUsed          EventType = "session_used"
	EventSessionLoggedOut     EventType = "session_logged_out"
	EventOtherSessionsRevoked EventType = "other_sessions_revoked"
	EventSessionTerminated    EventType = "session_terminated"
	EventLoginFailed          EventType = "login_failed"
	EventLoginThrottled       EventType = "login_throttled"
	EventLoginFailuresTallied EventType = "login_failures_tallied"
	EventUserErased           EventType = "user_erased" // erase.go
	// Key events live on the ledger's key subject; see keys.go.
	EventSigningKeyIntroduced EventType = "signing_key_introduced"
	EventSigningKeyRotated    EventType = "signing_key_rotated"
)

// SchemaVersion is written into every event. A reader refuses events from a
// newer schema instead of folding them wrongly. Version 2 added the key id,
// MAC and signature; a version-1 event carries neither and is never
// authentic (see KeyChain).
const SchemaVersion = 2

func (t EventType) known() bool {
	switch t {
	case EventEmailClaimed, EventUserRegistered, EventSessionStarted, EventSessionUsed,
		EventSessionLoggedOut, EventOtherSessionsRevoked, EventSessionTerminated, EventLoginFailed,
		EventLoginThrottled, EventLoginFailuresTallied, EventUserErased,
		EventSigningKeyIntroduced, EventSigningKeyRotated:
		return true
	case EventSessionEvicted: // limit.go
		return true
	case EventAPIKeyCreated, EventAPIKeyRevoked, EventAPIKeyUsed: // apikey.go
		return true
	case EventServiceKeyCreated, EventServiceKeyRevoked, EventAppRegistered, EventAppRevoked,
		EventUserRoleChanged, EventSessionRevokedByAdmin: // access.go
		return true
	case EventPasswordChanged, EventPasswordResetRequested, EventPasswordReset,
		EventLoginCodeRequested, EventLoginCodeUsed: // lifecycle.go
		return true
	case EventMFAEnrolmentStarted, EventMFAEnrolled, EventMFADisabled, EventMFAChallenged,
		EventMFAVerified, EventRecoveryCodeUsed, EventMFAFailed: // mfa.go
		return true
	}
	return false
}

// Event is the envelope every fact travels in. ID is assigned by whoever
// appends the event (it doubles as the de-duplication key), Time is the
// instant the fact happened as seen by the deciding instance.
//
// PrevHash and Hash chain the events of one subject (one aggregate): Hash is
// SHA-256 over the event's canonical bytes, which include PrevHash, the hash
// of the subject's previous authentic event ("" for its first). Altering,
// dropping or reordering an event breaks the chain at that point.
//
// A hash alone proves nothing about who wrote the event: anyone can compute
// one. KeyID, MAC and Sig authenticate it (see SigningKey): MAC is what a
// ledger instance, which holds the signing key, checks on every event; Sig
// is what an auditor holding only the public key checks. Both cover Hash,
// and Hash covers KeyID.
type Event struct {
	Type          EventType       `json:"type"`
	ID            string          `json:"event_id"`
	UserID        string          `json:"user_id,omitempty"`
	SessionID     string          `json:"session_id,omitempty"`
	Time          time.Time       `json:"time"`
	SchemaVersion int             `json:"schema_version"`
	Payload       json.RawMessage `json:"payload"`
	PrevHash      string          `json:"prev_hash"`
	KeyID         string          `json:"kid,omitempty"`
	Hash          string          `json:"hash,omitempty"`
	MAC           string          `json:"mac,omitempty"`
	Sig           string          `json:"sig,omitempty"`
}

// CanonicalBytes is what Hash covers: the event's JSON encoding without the
// hash, MAC and signature. encoding/json writes struct fields in declaration
// order and compacts the raw payload, so the bytes are reproducible from a
// decoded event.
func (e Event) CanonicalBytes() ([]byte, error) {
	e.Hash, e.MAC, e.Sig = "", "", ""
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("canonical %s event: %w", e.Type, err)
	}
	return b, nil
}

// ComputeHash is "sha256:<hex>" of the canonical bytes.
func (e Event) ComputeHash() (string, error) {
	b, err := e.CanonicalBytes()
	if err != nil {
		return "", err
	}
	return hashText(b), nil
}

const hashLabel = "sha256:"

// hashText is an event's hash of its canonical bytes, as events spell it.
func hashText(canon []byte) string {
	sum := sha256.Sum256(canon)
	return hashLabel + hex.EncodeToString(sum[:])
}

// Seal links the event after prevHash, sets its own hash and authenticates
// it with k. It is the only way an event gets its hash and signature; the
// log adapter calls it right before publishing.
func (e *Event) Seal(prevHash string, k SigningKey) error {
	_, err := e.seal(prevHash, k)
	return err
}

// seal is Seal, returning the canonical bytes the hash covers.
func (e *Event) seal(prevHash string, k SigningKey) (canon []byte, err error) {
	if k.priv == nil {
		return nil, errors.New("seal event: no signing key")
	}
	e.PrevHash = prevHash
	e.KeyID = k.id
	if canon, err = e.CanonicalBytes(); err != nil {
		return nil, err
	}
	e.Hash = hashText(canon)
	k.sign(e)
	return canon, nil
}

// SealEncoded is Seal followed by Encode, encoding the event once: what
// Encode writes is the canonical bytes with the hash, MAC and signature
// after the last field (they are Event's last fields, and none of their
// characters, "sha256:", hex and unpadded base64url, is one encoding/json
// escapes), so it appends them to the bytes the hash was computed over.
// The second json.Marshal was about a tenth of what sealing a use cost
// (TestSealEncodedIsSealThenEncode holds the two ways together).
func (e *Event) SealEncoded(prevHash string, k SigningKey) ([]byte, error) {
	canon, err := e.seal(prevHash, k)
	if err != nil {
		return nil, err
	}
	if len(canon) == 0 || canon[len(canon)-1] != '}' {
		return nil, fmt.Errorf("canonical %s event does not end its object", e.Type)
	}
	b := make([]byte, 0, len(canon)+len(e.Hash)+len(e.MAC)+len(e.Sig)+32)
	b = append(b, canon[:len(canon)-1]...)
	b = append(b, `,"hash":"`...)
	b = append(b, e.Hash...)
	b = append(b, `","mac":"`...)
	b = append(b, e.MAC...)
	b = append(b, `","sig":"`...)
	b = append(b, e.Sig...)
	return append(b, `"}`...), nil
}

// ErrHashMismatch means an event's content no longer matches its own hash.
var ErrHashMismatch = errors.New("event hash does not match its content")

// CheckHash verifies that the event's content still matches its hash.
func (e Event) CheckHash() error {
	h, err := e.ComputeHash()
	if err != nil {
		return err
	}
	if e.Hash == "" || h != e.Hash {
		return fmt.Errorf("event %s: %w", e.ID, ErrHashMismatch)
	}
	return nil
}

// StoredHashMatches reports whether data, the stored form of e, is what
// Encode writes (the authenticators last, as Hash, MAC and Sig) and its
// bytes without them hash to e.Hash. For what a writer stored it is
// CheckHash without the re-encoding (a third of the cost of decoding and
// checking an event): Encode and CanonicalBytes then write the same bytes
// up to the authenticators. It is weaker for bytes nobody signed: a
// non-canonical encoding with a hash of its own passes it and fails
// CheckHash. Only a caller that does not rest on its answer alone (the
// auditor, which takes it only where a signature vouches for e.Hash;
// see eventstore.Reader.Verify) may use it instead of CheckHash.
func (e Event) StoredHashMatches(data []byte) bool {
	n, ok := e.storedSplit(data)
	if !ok {
		return false
	}
	h := sha256.New()
	h.Write(data[:n])
	h.Write(closingBrace)
	var sum [sha256.Size]byte
	var hexSum [2 * sha256.Size]byte
	hex.Encode(hexSum[:], h.Sum(sum[:0]))
	return string(hexSum[:]) == e.Hash[len(hashLabel):]
}

// StoredHasher computes StoredHashMatches and, in the same pass, SHA-256 of
// all of data (what a stream digest folds in), the bytes the two share
// hashed once, and allocates nothing once warm. Not for concurrent use.
type StoredHasher struct {
	whole, hashed hash.Hash
	state         []byte
	sum           [sha256.Size]byte
	hexSum        [2 * sha256.Size]byte
}

// Sum is StoredHashMatches(e, data) and SHA-256 of data.
func (s *StoredHasher) Sum(e Event, data []byte) (matches bool, sum [sha256.Size]byte) {
	matches, sum, _ = s.SumHash(e, data)
	return matches, sum
}

// SumHash is Sum, and the bytes of e's hash as computed: when matches,
// what e.Hash spells in hex (a caller keeping hashes as bytes need not
// decode the text).
func (s *StoredHasher) SumHash(e Event, data []byte) (matches bool, sum, hash [sha256.Size]byte) {
	n, ok := e.storedSplit(data)
	if !ok {
		return false, sha256.Sum256(data), hash
	}
	if s.whole == nil {
		s.whole, s.hashed = sha256.New(), sha256.New()
	}
	s.whole.Reset()
	s.whole.Write(data[:n])
	// The state after the shared bytes, copied (crypto/sha256 hashes can).
	var err error
	if s.state, err = s.whole.(encoding.BinaryAppender).AppendBinary(s.state[:0]); err != nil {
		return false, sha256.Sum256(data), hash
	}
	if err := s.hashed.(encoding.BinaryUnmarshaler).UnmarshalBinary(s.state); err != nil {
		return false, sha256.Sum256(data), hash
	}
	s.whole.Write(data[n:])
	s.whole.Sum(s.sum[:0])
	sum = s.sum
	s.hashed.Write(closingBrace)
	s.hashed.Sum(s.sum[:0])
	hash = s.sum
	hex.Encode(s.hexSum[:], hash[:])
	return string(s.hexSum[:]) == e.Hash[len(hashLabel):], sum, hash
}

var closingBrace = []byte{'}'}

// storedSplit is where data's authenticators begin, if data ends with them
// as Encode writes them, Hash the form ComputeHash writes.
func (e Event) storedSplit(data []byte) (int, bool) {
	if len(e.Hash) != len(hashLabel)+2*sha256.Size || e.Hash[:len(hashLabel)] != hashLabel {
		return 0, false
	}
	n := len(data) - len(`,"hash":"","mac":"","sig":""}`) - len(e.Hash) - len(e.MAC) - len(e.Sig)
	if n < 1 {
		return 0, false
	}
	t := data[n:] // exactly as long as the parts below
	for _, part := range [...]string{`,"hash":"`, e.Hash, `","mac":"`, e.MAC, `","sig":"`, e.Sig, `"}`} {
		if string(t[:len(part)]) != part {
			return 0, false
		}
		t = t[len(part):]
	}
	return n, true
}

// Payloads, one per event type. Field names are part of the documented
// schema: renaming one is a schema version bump.
type (
	EmailClaimed struct {
		EmailHash string `json:"email_hash"`
	}
	// UserRegistered carries the email as EmailHash (what logins and
	// claims look it up by) and EmailSealed (the email encrypted under
	// the user's data key, unreadable once the user is erased). Events
	// written before sealing carry the email in clear in Email instead.
	UserRegistered struct {
		Email        string `json:"email,omitempty"`
		EmailHash    string `json:"email_hash,omitempty"`
		EmailSealed  string `json:"email_sealed,omitempty"`
		PasswordHash string `json:"password_hash"`
	}
	SessionStarted struct {
		Method            string    `json:"method"`
		KeepLoggedIn      bool      `json:"keep_logged_in"`
		MFA               bool      `json:"mfa"`
		MaxExpiresAt      time.Time `json:"max_expires_at"`
		IdleWindowSeconds int64     `json:"idle_window_seconds"`
		TokenHash         string    `json:"token_hash"`
		// APIKeyID is the key exchanged for the session (method
		// api_key); absent for a password login.
		APIKeyID string `json:"api_key_id,omitempty"`
	}
	SessionUsed          struct{}
	SessionLoggedOut     struct{}
	OtherSessionsRevoked struct {
		KeptSessionID string `json:"kept_session_id"`
	}
	SessionTerminated struct {
		BySessionID string `json:"by_session_id,omitempty"`
	}
	LoginFailed struct {
		Reason    string `json:"reason"`
		EmailHash string `json:"email_hash"`
		// InARow counts this failure and those before it since the last
		// success (see LoginThrottle); absent in events from before it
		// was counted.
		InARow int `json:"in_a_row,omitempty"`
		// ChallengeID names the emailed code or link a wrong_code
		// failure tried (see lifecycle.go); absent otherwise.
		ChallengeID string `json:"challenge_id,omitempty"`
	}
	LoginThrottled struct {
		Until  time.Time `json:"until"`
		Level  int       `json:"level"`
		InARow int       `json:"in_a_row"`
	}
	// LoginFailuresTallied sums up, per instance and interval, the failed
	// logins for emails no account has: one event instead of one per
	// attempt, so a flood of made-up emails cannot grow the log.
	LoginFailuresTallied struct {
		From      time.Time `json:"from"`
		To        time.Time `json:"to"`
		Failures  int       `json:"failures"`
		Emails    int       `json:"emails"`    // distinct emails tried (as far as one instance can count)
		Throttled int       `json:"throttled"` // attempts refused by the throttle
	}
)

// Hash is the registration's email hash: the one it carries, or that of
// the clear email of an older event.
func (p UserRegistered) Hash() string {
	if p.EmailHash == "" && p.Email != "" {
		return EmailHash(p.Email)
	}
	return p.EmailHash
}

// Login failure reasons recorded in login_failed.
const (
	LoginFailedUnknownEmail  = "unknown_email"
	LoginFailedWrongPassword = "wrong_password"
)

func newEvent(t EventType, userID, sessionID string, at time.Time, payload any) Event {
	raw, err := json.Marshal(payload)
	if err != nil {
		// Payloads are plain structs of strings, bools and times.
		panic(fmt.Sprintf("domain: marshal %s payload: %v", t, err))
	}
	return Event{Type: t, UserID: userID, SessionID: sessionID, Time: at.UTC(), SchemaVersion: SchemaVersion, Payload: raw}
}

// ClaimEmail is the first write of a signup: it reserves a normalized email
// for a user id on the email's own subject, appended only if that subject is
// empty.
func ClaimEmail(userID, normalizedEmail string, at time.Time) Event {
	return newEvent(EventEmailClaimed, userID, "", at, EmailClaimed{EmailHash: EmailHash(normalizedEmail)})
}

// SessionUse records that a session's token was presented at an instant.
func SessionUse(userID, sessionID string, at time.Time) Event {
	return newEvent(EventSessionUsed, userID, sessionID, at, SessionUsed{})
}

// TallyUnknownEmailLogins records the failed logins for unknown emails one
// instance saw in [from, to).
func TallyUnknownEmailLogins(t LoginFailuresTallied) Event {
	t.From, t.To = t.From.UTC(), t.To.UTC()
	return newEvent(EventLoginFailuresTallied, "", "", t.To, t)
}

// Encode is the JSON stored in the log.
func (e Event) Encode() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", e.Type, err)
	}
	return b, nil
}

// DecodeEvent parses and checks an envelope from the log.
func DecodeEvent(data []byte) (Event, error) {
	e, ok := decodeAsEncoded(data)
	if !ok {
		e = Event{}
		if err := json.Unmarshal(data, &e); err != nil {
			return e, fmt.Errorf("decode event: %w", err)
		}
	}
	if !e.Type.known() {
		return e, fmt.Errorf("%w %q", ErrUnknownEvent, e.Type)
	}
	if e.SchemaVersion < 1 || e.SchemaVersion > SchemaVersion {
		return e, fmt.Errorf("event %s: unsupported schema version %d", e.ID, e.SchemaVersion)
	}
	if e.Time.IsZero() {
		return e, fmt.Errorf("event %s: missing time", e.ID)
	}
	return e, nil
}

// decodeAsEncoded is json.Unmarshal into an Event for the bytes Encode
// writes, at a fraction of its cost (decoding is most of what checking an
// event costs): the fields in Encode's order, each once, strings of
// printable ASCII with nothing to unescape, the payload an object, nothing
// around. It gives up (false) on anything else, for json.Unmarshal to
// decode, so what it accepts decodes to the same Event either way
// (FuzzDecodeAsEncoded).
func decodeAsEncoded(data []byte) (Event, bool) {
	return (&encodedReader{data: data}).event()
}

// event reads Encode's layout.
func (d *encodedReader) event() (Event, bool) {
	var e Event
	ok := d.lit(`{"type":`) && d.str((*string)(&e.Type)) &&
		d.lit(`,"event_id":`) && d.str(&e.ID) &&
		d.optional(`,"user_id":`, &e.UserID) &&
		d.optional(`,"session_id":`, &e.SessionID) &&
		d.lit(`,"time":`) && d.time(&e.Time) &&
		d.lit(`,"schema_version":`) && d.int(&e.SchemaVersion) &&
		d.lit(`,"payload":`) && d.object(&e.Payload) &&
		d.lit(`,"prev_hash":`) && d.str(&e.PrevHash) &&
		d.optional(`,"kid":`, &e.KeyID) &&
		d.optional(`,"hash":`, &e.Hash) &&
		d.optional(`,"mac":`, &e.MAC) &&
		d.optional(`,"sig":`, &e.Sig) &&
		d.lit(`}`) && d.at == len(d.data)
	return e, ok
}

// DecodeVouched is DecodeEvent for stored bytes that a signature checked
// later vouches for (eventstore.Reader.Verify's events whose signature is
// left to their subject's newest one), at a fraction of its cost: only the
// layout Encode writes (decodeAsEncoded's), every check of DecodeEvent but
// one, and no payload. The check left out is that the payload is valid
// JSON: Encode cannot write one that is not (json.Marshal refuses an
// invalid json.RawMessage), so bytes a writer stored pass it, and bytes
// no writer stored are not vouched for by any signature, so the caller
// must judge the event again with DecodeEvent wherever no signature turns
// out to vouch for it. Payload is left nil, and the strings are sliced
// from text, which must be data as a string: the caller chooses whether it
// is a copy or, if data never changes afterwards, data itself (no
// allocation). false: not that layout or not an event DecodeEvent
// accepts; DecodeEvent says why.
func DecodeVouched(data []byte, text string) (Event, bool) {
	if len(text) != len(data) || text == "" {
		return Event{}, false
	}
	e, ok := (&encodedReader{data: data, shared: text, vouched: true}).event()
	if !ok || !e.Type.known() || e.SchemaVersion < 1 || e.SchemaVersion > SchemaVersion || e.Time.IsZero() {
		return Event{}, false
	}
	return e, true
}

// encodedReader reads the fixed layout of decodeAsEncoded from data[at:].
// With shared set (data as a string), strings are sliced from it rather
// than copied; vouched: see DecodeVouched.
type encodedReader struct {
	data    []byte
	at      int
	shared  string
	vouched bool
}

func (d *encodedReader) lit(s string) bool {
	if len(d.data)-d.at < len(s) || string(d.data[d.at:d.at+len(s)]) != s {
		return false
	}
	d.at += len(s)
	return true
}

// optional reads the named string field if it comes next.
func (d *encodedReader) optional(name string, v *string) bool {
	if !d.lit(name) {
		return true
	}
	return d.str(v)
}

// quoted is the extent of a string of printable ASCII without '"' or '\'
// (which json.Unmarshal takes as it is), quotes included.
func (d *encodedReader) quoted() ([]byte, bool) {
	if d.at >= len(d.data) || d.data[d.at] != '"' {
		return nil, false
	}
	i := d.at + 1
	for i+8 <= len(d.data) && plain8(binary.LittleEndian.Uint64(d.data[i:])) {
		i += 8
	}
	for i < len(d.data) && plainASCII[d.data[i]] {
		i++
	}
	if i == len(d.data) || d.data[i] != '"' {
		return nil, false
	}
	q := d.data[d.at : i+1]
	d.at = i + 1
	return q, true
}

// Eight bytes at a time (the strings of an event are most of its bytes):
// each of these says exactly whether any of x's bytes is below 0x20, above
// 0x7e, or equal to c.
const (
	swarOnes  = 0x0101010101010101
	swarHighs = 0x8080808080808080
)

func anyBelow20(x uint64) bool { return (x-0x20*swarOnes)&^x&swarHighs != 0 }
func anyAbove7e(x uint64) bool { return ((x+swarOnes)|x)&swarHighs != 0 }
func anyEqual(x uint64, c byte) bool {
	y := x ^ (uint64(c) * swarOnes)
	return (y-swarOnes)&^y&swarHighs != 0
}

// plain8: all eight bytes of x are what plainASCII admits.
func plain8(x uint64) bool {
	return !anyBelow20(x) && !anyAbove7e(x) && !anyEqual(x, '"') && !anyEqual(x, '\\')
}

// plainASCII: printable ASCII but '"' and '\\', what quoted reads through.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c <= 0x7e; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (d *encodedReader) str(v *string) bool {
	start := d.at
	q, ok := d.quoted()
	switch {
	case !ok:
	case d.shared != "":
		*v = d.shared[start+1 : d.at-1]
	default:
		*v = string(q[1 : len(q)-1])
	}
	return ok
}

// time is json.Unmarshal's own call for a time.Time.
func (d *encodedReader) time(t *time.Time) bool {
	q, ok := d.quoted()
	return ok && t.UnmarshalJSON(q) == nil
}

// int reads a small non-negative integer without leading zeros.
func (d *encodedReader) int(v *int) bool {
	n, i := 0, d.at
	for ; i < len(d.data) && i-d.at < 9 && d.data[i] >= '0' && d.data[i] <= '9'; i++ {
		n = n*10 + int(d.data[i]-'0')
	}
	if i == d.at || (d.data[d.at] == '0' && i-d.at > 1) || (i < len(d.data) && d.data[i] >= '0' && d.data[i] <= '9') {
		return false
	}
	d.at, *v = i, n
	return true
}

// object reads a JSON object as json.RawMessage does: its bytes, copied,
// once json.Valid.
func (d *encodedReader) object(m *json.RawMessage) bool {
	if d.at >= len(d.data) || d.data[d.at] != '{' {
		return false
	}
	depth, inString := 0, false
	for i := d.at; i < len(d.data); i++ {
		if inString { // through to the next quote or escape
			for i+8 <= len(d.data) {
				if x := binary.LittleEndian.Uint64(d.data[i:]); anyEqual(x, '"') || anyEqual(x, '\\') {
					break
				}
				i += 8
			}
			for i < len(d.data) && d.data[i] != '"' && d.data[i] != '\\' {
				i++
			}
			if i == len(d.data) {
				break
			}
		}
		c := d.data[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth--; depth == 0 {
				raw := d.data[d.at : i+1]
				switch {
				case d.vouched:
				case !json.Valid(raw):
					return false
				default:
					*m = append(json.RawMessage(nil), raw...)
				}
				d.at = i + 1
				return true
			}
		}
	}
	return false
}

// decodeSessionStarted is DecodePayload[SessionStarted]: through
// sessionStartedAsEncoded for the payload json.Marshal writes (a rebuild
// decodes one per session, and json.Unmarshal was a tenth of its checks),
// through json.Unmarshal for anything else.
func decodeSessionStarted(e Event) (SessionStarted, error) {
	if p, ok := sessionStartedAsEncoded(e.Payload); ok {
		return p, nil
	}
	return DecodePayload[SessionStarted](e)
}

// sessionStartedAsEncoded is json.Unmarshal into a SessionStarted for the
// bytes json.Marshal writes for one, as decodeAsEncoded is for the
// envelope: the fields in declaration order, each once, strings of
// printable ASCII with nothing to unescape, nothing around. It gives up
// (false) on anything else, so what it accepts decodes to the same payload
// either way (FuzzSessionStartedAsEncoded).
func sessionStartedAsEncoded(data []byte) (SessionStarted, bool) {
	var p SessionStarted
	var idle int
	d := encodedReader{data: data}
	ok := d.lit(`{"method":`) && d.str(&p.Method) &&
		d.lit(`,"keep_logged_in":`) && d.bool(&p.KeepLoggedIn) &&
		d.lit(`,"mfa":`) && d.bool(&p.MFA) &&
		d.lit(`,"max_expires_at":`) && d.time(&p.MaxExpiresAt) &&
		d.lit(`,"idle_window_seconds":`) && d.int(&idle) &&
		d.lit(`,"token_hash":`) && d.str(&p.TokenHash) &&
		d.optional(`,"api_key_id":`, &p.APIKeyID) &&
		d.lit(`}`) && d.at == len(d.data)
	p.IdleWindowSeconds = int64(idle)
	return p, ok
}

func (d *encodedReader) bool(v *bool) bool {
	switch {
	case d.lit("true"):
		*v = true
	case d.lit("false"):
		*v = false
	default:
		return false
	}
	return true
}

// DecodePayload unmarshals the payload into the struct for its type.
func DecodePayload[P any](e Event) (P, error) {
	var p P
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		return p, fmt.Errorf("event %s (%s): payload: %w", e.ID, e.Type, err)
	}
	return p, nil
}

// NextEventTime is the time to give an event appended after one at last on
// the same subject: now, or last if the deciding instance's clock is behind
// the one that wrote last. Times on a subject therefore never go backwards,
// so folding a subject's events "up to an instant" (as-of replay) is
// folding a prefix of the subject in log order.
func NextEventTime(now, last time.Time) time.Time {
	if now.Before(last) {
		return last.UTC()
	}
	return now.UTC()
}
