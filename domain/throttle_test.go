package domain

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestFoldingTheEventsAgreesWithTheRule: whatever the sequence of failures
// and successes, the state folded from the events FailLogin and
// StartSession write is the state the rule computed when deciding them.
// That is what lets every instance decide a throttle from the log alone.
func TestFoldingTheEventsAgreesWithTheRule(t *testing.T) {
	rule := LoginThrottle{After: 3, Window: time.Minute, Base: time.Second, Max: 8 * time.Second}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	u := NewUser("u1", "a@example.com", "hash", nil)
	decided, folded := LoginFailures{}, LoginFailures{}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	throttles := 0
	for i := 0; i < 2000; i++ {
		at = at.Add(time.Duration(rng.IntN(90)) * time.Second)
		var events []Event
		if rng.IntN(10) == 0 {
			events = []Event{u.StartSession("s", TokenHash{}, "password", false, false, at, DefaultPolicy())}
			decided = LoginFailures{}
		} else {
			events = u.FailLogin("a@example.com", at, rule)
			var throttled bool
			decided, throttled = rule.Fail(decided, at)
			if throttled != (len(events) == 2) {
				t.Fatalf("step %d: rule throttled=%v, events %d", i, throttled, len(events))
			}
			if throttled {
				throttles++
			}
		}
		for _, e := range events {
			var err error
			if folded, err = folded.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
		if decided != folded {
			t.Fatalf("step %d: decided %+v, folded %+v", i, decided, folded)
		}
		u = u.WithFailures(folded)
	}
	if throttles == 0 {
		t.Fatal("the workload never throttled")
	}
}

func TestThrottleBacksOffUpToMax(t *testing.T) {
	rule := LoginThrottle{After: 2, Window: time.Hour, Base: time.Second, Max: 5 * time.Second}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var f LoginFailures
	var got []time.Duration
	for i := 0; i < 6; i++ {
		var throttled bool
		f, throttled = rule.Fail(f, at)
		if throttled {
			got = append(got, f.Until.Sub(at))
		}
		if until, ok := f.ThrottledAt(at); ok {
			at = until // the next guess comes when the throttle lifts
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("throttles %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("throttles %v, want %v", got, want)
		}
	}
	if (LoginThrottle{After: 0, Window: time.Hour, Base: time.Second, Max: time.Second}).Validate() == nil {
		t.Fatal("a rule that never throttles was accepted")
	}
	if (LoginThrottle{After: 1, Window: time.Hour, Base: time.Minute, Max: time.Second}).Validate() == nil {
		t.Fatal("a max below the base was accepted")
	}
}
