package eventstore

const (
	// DefaultStream is the stream every instance appends to and reads from.
	DefaultStream = "LEDGER"
	// SubjectPrefix covers every subject the stream holds (ledger.>).
	SubjectPrefix = "ledger."
	userPrefix    = SubjectPrefix + "user."
	emailPrefix   = SubjectPrefix + "email."
	usePrefix     = SubjectPrefix + "use."
	// AnonSubject holds facts not tied to a known user (a login with an
	// unknown email).
	AnonSubject = SubjectPrefix + "anon"
	// KeysSubject holds the ledger's key history: the introduction of the
	// first signing key and every rotation.
	KeysSubject = SubjectPrefix + "keys"
)

// UserSubject is the ordered history of one user aggregate.
func UserSubject(userID string) string { return userPrefix + userID }

// UseSubject holds a user's session_used events, each standing alone (no
// chain, no expected-sequence check: see domain.JudgeUse). Keeping uses off
// the user's subject means recording one never makes the server load the
// last message of the user's subject, whose block an old user's history
// would otherwise pull into memory. Streams written before it keep their
// uses on the user's subject, where they still fold.
func UseSubject(userID string) string { return usePrefix + userID }

// UseSubjectUser is the user whose use subject this is, if it is one.
func UseSubjectUser(subject string) (string, bool) {
	if len(subject) <= len(usePrefix) || subject[:len(usePrefix)] != usePrefix {
		return "", false
	}
	return subject[len(usePrefix):], true
}

// EmailSubject holds the claim on one normalized email, keyed by its hash so
// the subject stays a valid NATS token whatever the address contains.
func EmailSubject(emailHash string) string { return emailPrefix + emailHash }

// RegistrySubject holds one registry of credentials (domain.ServiceKeysRegistry:
// ledger.service-keys, domain.AppsRegistry: ledger.apps).
func RegistrySubject(registry string) string { return SubjectPrefix + registry }
