package main

import (
	"context"

	"github.com/sessionledger/ledger/handlers/command"
	"github.com/sessionledger/ledger/handlers/ports"
)

// The key store for users' secrets (ports.Secrets): a TOTP secret is
// sealed with it before it goes into an event.
//
// ServiceConfig.Secrets, when set, is used as is (the tests set the
// in-memory fake of handlers/handlerstest). Otherwise StartService calls
// NewSecrets.
//
// LEAD: the real adapter (a user's data key per user, crypto-shredding)
// lands on another branch. Plug it in here: make NewSecrets build it from
// what the service has opened (the ledger's log, the projection, the data
// dir), e.g.
//
//	NewSecrets = func(ctx context.Context, cfg ServiceConfig, s *Service) (ports.Secrets, error) {
//		return secretstore.Open(ctx, cfg.DataDir, s.ll.store, s.proj, …)
//	}
//
// (or replace the default below). Until then `ledger serve` has no key
// store: the second factor's routes answer 503 MFA_UNAVAILABLE, and no
// secret is ever written unsealed.
var NewSecrets = func(_ context.Context, _ ServiceConfig, s *Service) (ports.Secrets, error) {
	s.log.Warn("no key store for users' secrets is configured: two-factor authentication is unavailable (503 MFA_UNAVAILABLE)")
	return noSecrets{}, nil
}

// noSecrets is the stand-in while no key store is wired: it seals and
// opens nothing.
type noSecrets struct{}

func (noSecrets) Seal(context.Context, string, string, []byte) (string, error) {
	return "", command.ErrNoSecrets
}

func (noSecrets) Open(context.Context, string, string, string) ([]byte, error) {
	return nil, command.ErrNoSecrets
}

func (noSecrets) Destroy(context.Context, string) error { return command.ErrNoSecrets }
