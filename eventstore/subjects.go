package eventstore

const (
	// DefaultStream is the stream every instance appends to and reads from.
	DefaultStream = "LEDGER"
	// SubjectPrefix covers every subject the stream holds (ledger.>).
	SubjectPrefix = "ledger."
	userPrefix    = SubjectPrefix + "user."
	emailPrefix   = SubjectPrefix + "email."
	// AnonSubject holds facts not tied to a known user (a login with an
	// unknown email).
	AnonSubject = SubjectPrefix + "anon"
	// KeysSubject holds the ledger's key history: the introduction of the
	// first signing key and every rotation.
	KeysSubject = SubjectPrefix + "keys"
)

// UserSubject is the ordered history of one user aggregate.
func UserSubject(userID string) string { return userPrefix + userID }

// EmailSubject holds the claim on one normalized email, keyed by its hash so
// the subject stays a valid NATS token whatever the address contains.
func EmailSubject(emailHash string) string { return emailPrefix + emailHash }

// RegistrySubject holds one registry of credentials (domain.ServiceKeysRegistry:
// ledger.service-keys, domain.AppsRegistry: ledger.apps).
func RegistrySubject(registry string) string { return SubjectPrefix + registry }
