package main

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func atof(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestLoginParts: the parts come from the deltas of the server's series,
// labelled ones included, and what is not hash or append is the rest.
func TestLoginParts(t *testing.T) {
	exposition := func(logins, loginSecs, hashes, hashSecs, appends, appendSecs float64) map[string]float64 {
		m := map[string]float64{}
		for _, l := range strings.Split(strings.Join([]string{
			`ledger_http_request_duration_seconds_count{route="POST /v1/auth/login"} ` + ftoa(logins),
			`ledger_http_request_duration_seconds_sum{route="POST /v1/auth/login"} ` + ftoa(loginSecs),
			`ledger_http_request_duration_seconds_count{route="GET /v1/validate"} 1e6`,
			"ledger_password_hashes_total " + ftoa(hashes),
			"ledger_password_hash_seconds_total " + ftoa(hashSecs),
			"ledger_append_duration_seconds_count " + ftoa(appends),
			"ledger_append_duration_seconds_sum " + ftoa(appendSecs),
		}, "\n"), "\n") {
			name, val, ok := cutSeries(l)
			if !ok {
				t.Fatalf("cutSeries(%q) failed", l)
			}
			m[name] = atof(t, val)
		}
		return m
	}
	before := exposition(10, 1, 12, 0.5, 30, 0.03)
	after := exposition(110, 3.6, 112, 2.9, 130, 0.13) // 100 logins: 26 ms, hash 24 ms, append 1 ms
	p := loginPartsOf(before, after)
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	if p.Logins != 100 || !near(p.Request, 26) || !near(p.Hash, 24) || !near(p.Append, 1) || !near(p.Rest, 1) {
		t.Fatalf("parts %+v, want 100 logins of 26 ms: hash 24, append 1, rest 1", p)
	}
	if n := loginPartsOf(before, before).note(0.02); !strings.Contains(n, "did not say") {
		t.Fatalf("no logins in the window, note %q", n)
	}
}
