package eventstore

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

// TestVerifyHeadsIndex: subjects shorter than a subjectKey and longer ones
// (and ones that differ only past a prefix, or by a trailing zero byte)
// each get a head of their own, found again by the same subject, and all
// yields every subject with its head.
func TestVerifyHeadsIndex(t *testing.T) {
	h := newVerifyHeads()
	var subjects []string
	for i := range 5000 {
		subjects = append(subjects, fmt.Sprintf("ledger.user.%d", i))
	}
	long := "ledger.user." + strings.Repeat("x", 76)
	subjects = append(subjects, long, long+"y", strings.Repeat("z", 79), strings.Repeat("z", 80), "a", "a\x00", "")
	for i, s := range subjects {
		idx, head := h.slot(s)
		if idx != i {
			t.Fatalf("%q: index %d, want %d", s, idx, i)
		}
		head.seq = uint64(i + 1)
	}
	if h.len() != len(subjects) {
		t.Fatalf("%d heads, want %d", h.len(), len(subjects))
	}
	for i, s := range subjects {
		if idx, head := h.slot(s); idx != i || head.seq != uint64(i+1) {
			t.Fatalf("%q: index %d seq %d, want %d and %d", s, idx, head.seq, i, i+1)
		}
	}
	got := maps.Collect(h.all())
	if len(got) != len(subjects) {
		t.Fatalf("all yields %d subjects, want %d", len(got), len(subjects))
	}
	for i, s := range subjects {
		if got[s].seq != uint64(i+1) {
			t.Fatalf("all: %q has seq %d, want %d", s, got[s].seq, i+1)
		}
	}
}

// TestVerifyHeadsIndexHoldsTheLedgersSubjects: every kind of subject the
// ledger writes goes to the pointer-free index, none to the string-keyed
// map (whose strings the collector marks at every cycle of a read).
func TestVerifyHeadsIndexHoldsTheLedgersSubjects(t *testing.T) {
	h := newVerifyHeads()
	user := "0190b7a4-1c2d-7e3f-8a9b-0c1d2e3f4a5b" // a UUID, as signup makes
	emailHash := strings.Repeat("f", 64)           // SHA-256 in hex
	subjects := []string{UserSubject(user), UseSubject(user), EmailSubject(emailHash), KeysSubject, AnonSubject,
		RegistrySubject("service-keys"), RegistrySubject("apps")}
	for _, s := range subjects {
		h.slot(s)
	}
	if len(h.long) != 0 || len(h.index) != len(subjects) {
		t.Fatalf("index %d, string-keyed %d (%v), want all %d in the index", len(h.index), len(h.long), h.long, len(subjects))
	}
}
