package domain

import (
	"fmt"
	"time"
)

// Decisive is one event that decided an as-of verdict, and what it decided.
type Decisive struct {
	Role  string // second_factor, started, last_use, revoked
	Event Event
}

// AsOf is a session's verdict at an instant recomputed from the log, and why.
type AsOf struct {
	SessionID   string
	UserID      string
	At          time.Time
	Verdict     Verdict
	Summary     string
	Explanation []Decisive
	Session     *Session // state folded from the events up to At
}

// SessionAsOf replays a user's events (in stream order) up to `at` and
// returns the session's verdict at `at`, using the same fold and the same
// Verdict as live validation. Only events whose time is not after `at` are
// folded. It fails with ErrSessionNotFound if the events never start the
// session.
func SessionAsOf(events []Event, sessionID string, at time.Time) (AsOf, error) {
	var s *Session
	var started, lastUse, revoked, factor Event
	for _, e := range events {
		if (e.Type == EventMFAVerified || e.Type == EventRecoveryCodeUsed) && e.SessionID == sessionID && s == nil {
			factor = e // written right before the session's start, in the same decision
			continue
		}
		if e.Type == EventSessionStarted && e.SessionID == sessionID && s == nil {
			var err error
			if s, err = SessionFromEvent(e); err != nil {
				return AsOf{}, err
			}
			started = e
			continue
		}
		if s == nil || e.Time.After(at) {
			continue
		}
		before := s.Snapshot()
		if err := s.Apply(e); err != nil {
			return AsOf{}, err
		}
		after := s.Snapshot()
		if !after.LastUseAt.Equal(before.LastUseAt) {
			lastUse = e
		}
		if !after.RevokedAt.Equal(before.RevokedAt) {
			revoked = e
		}
	}
	if s == nil {
		return AsOf{}, ErrSessionNotFound
	}
	v := s.Verdict(at)
	out := AsOf{SessionID: sessionID, UserID: s.UserID(), At: at, Verdict: v, Session: s}
	if factor.ID != "" && s.MFA() {
		out.Explanation = append(out.Explanation, Decisive{Role: "second_factor", Event: factor})
	}
	out.Explanation = append(out.Explanation, Decisive{Role: "started", Event: started})
	if lastUse.ID != "" && !at.Before(started.Time) {
		out.Explanation = append(out.Explanation, Decisive{Role: "last_use", Event: lastUse})
	}
	if revoked.ID != "" && v.Reason.Kind() == "revoked" {
		out.Explanation = append(out.Explanation, Decisive{Role: "revoked", Event: revoked})
	}
	out.Summary = explain(s, v, started, lastUse, revoked)
	if s.MFA() && v.Reason != ReasonNotStarted {
		out.Summary += "; " + secondFactor(factor)
	}
	return out, nil
}

func explain(s *Session, v Verdict, started, lastUse, revoked Event) string {
	use := "no use recorded, idle window counts from the start"
	if lastUse.ID != "" {
		use = fmt.Sprintf("last use %s (event %s)", stamp(lastUse.Time), lastUse.ID)
	}
	switch v.Reason {
	case ReasonNone:
		return fmt.Sprintf("valid — started %s (event %s), %s, idle deadline %s, max deadline %s",
			stamp(started.Time), started.ID, use, stamp(v.IdleExpiresAt), stamp(v.MaxExpiresAt))
	case ReasonNotStarted:
		return fmt.Sprintf("not started — the session starts at %s (event %s)", stamp(started.Time), started.ID)
	case ReasonExpiredIdle:
		return fmt.Sprintf("expired: idle — %s, idle window %s, idle deadline %s",
			use, span(s.IdleWindow()), stamp(v.IdleExpiresAt))
	case ReasonExpiredMax:
		return fmt.Sprintf("expired: max — started %s (event %s), max lifetime %s, max deadline %s",
			stamp(started.Time), started.ID, span(v.MaxExpiresAt.Sub(started.Time)), stamp(v.MaxExpiresAt))
	default:
		why := fmt.Sprintf("revoked: %s — %s at %s (event %s)", v.Reason.Detail(), revoked.Type, stamp(revoked.Time), revoked.ID)
		if revoked.Type == EventSessionEvicted {
			if p, err := DecodePayload[SessionEvicted](revoked); err == nil {
				why += fmt.Sprintf(": the start of session %s went over the limit of %d live sessions per user, which revokes the oldest live ones", p.BySessionID, p.Limit)
			}
		}
		if revoked.Type == EventUserErased {
			if p, err := DecodePayload[UserErased](revoked); err == nil {
				why += ": the user was erased by " + p.By
			}
		}
		if revoked.Type == EventSessionRevokedByAdmin {
			if p, err := DecodePayload[SessionRevokedByAdmin](revoked); err == nil {
				why += ": by " + p.By
				if p.Actor != "" {
					why += fmt.Sprintf(", on behalf of %q", p.Actor)
				}
				if p.Note != "" {
					why += fmt.Sprintf(", note %q", p.Note)
				}
			}
		}
		return why
	}
}

// secondFactor explains how an MFA session (aal2) proved its second factor.
func secondFactor(factor Event) string {
	switch factor.Type {
	case EventMFAVerified:
		if p, err := DecodePayload[MFAVerified](factor); err == nil {
			return fmt.Sprintf("second factor (aal2): TOTP code of time step %d at %s (event %s)", p.Step, stamp(factor.Time), factor.ID)
		}
	case EventRecoveryCodeUsed:
		return fmt.Sprintf("second factor (aal2): a recovery code at %s (event %s)", stamp(factor.Time), factor.ID)
	}
	return "second factor (aal2)"
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// span writes whole days as "30d" and anything else as Go does.
func span(d time.Duration) string {
	if d > 0 && d%Day == 0 {
		return fmt.Sprintf("%dd", d/Day)
	}
	return d.String()
}
