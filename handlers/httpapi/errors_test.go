package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/ports"
)

func TestErrorTable(t *testing.T) {
	wrapped := fmt.Errorf("append to user x: %w", ports.ErrStreamSealed)
	if e := errorFor(wrapped); e.StatusCode != http.StatusServiceUnavailable || e.Reason != "STREAM_SEALED" {
		t.Fatalf("a wrapped sealed-stream error maps to %+v", e)
	}
	if e := errorFor(fmt.Errorf("x: %w", domain.ErrEmailTaken)); e.StatusCode != http.StatusConflict {
		t.Fatalf("EMAIL_TAKEN maps to %+v", e)
	}
	if e := errorFor(errors.New("pebble: something broke")); e != errInternal {
		t.Fatalf("an unexpected error maps to %+v, want the generic 500", e)
	}
}

// TestEveryReasonIsDocumented: README's error table names every reason the
// API can answer with.
func TestEveryReasonIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	reasons := []string{errNotFound.Reason, errMethodNotAllowed.Reason, errBodyTooLarge.Reason, errInternal.Reason, errUnsupportedMedia.Reason,
		errInvalidPath.Reason, errExpectationFailed.Reason, errHeadersTooLarge.Reason, errTransferEncoding.Reason, errHTTPVersion.Reason,
		"API_KEY_REQUIRED", "KEY_SCOPE_DENIED", "ROLE_REQUIRED", "STEP_UP_REQUIRED", "INVALID_REQUEST", "TOKEN_EXPIRED", "TOKEN_REVOKED", "PROJECTION_BEHIND", "NOT_READY"}
	for _, row := range errorTable {
		reasons = append(reasons, row.reason)
	}
	for _, r := range reasons {
		if !strings.Contains(string(readme), "`"+r+"`") {
			t.Errorf("reason %s is not in README.md", r)
		}
	}
}

func TestBusyTellsWhenToRetry(t *testing.T) {
	w := httptest.NewRecorder()
	writeError(w, errorFor(fmt.Errorf("login: %w", command.ErrBusy)))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), `"reason":"BUSY"`) {
		t.Fatalf("busy: %d, Retry-After %q, %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	w = httptest.NewRecorder()
	writeError(w, errorFor(domain.ErrEmailTaken))
	if w.Header().Get("Retry-After") != "" {
		t.Fatal("Retry-After on an error that retrying does not fix")
	}
}
