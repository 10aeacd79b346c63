package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("10k, 100K,1m,10M,2500")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{10_000, 100_000, 1_000_000, 10_000_000, 2500}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "k", "-1k", "1g", "1.5m", ","} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestSessionsForEvents(t *testing.T) {
	for events, want := range map[int]int{10_000: 8_000, 100_000: 80_000, 1_000_000: 800_000, 10_000_000: 8_000_000, 12: 8} {
		if got := sessionsForEvents(events, 4); got != want {
			t.Errorf("%d events: %d sessions, want %d", events, got, want)
		}
	}
}

func TestDirUsage(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o700); err != nil {
		t.Fatal(err)
	}
	for p, n := range map[string]int{"x": 100, "a/y": 1000, "a/b/z": 5} {
		if err := os.WriteFile(filepath.Join(dir, p), make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	u, err := dirUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.bytes != 1105 || u.files != 3 {
		t.Fatalf("%+v", u)
	}
}

func TestRenderGrowth(t *testing.T) {
	out := renderGrowth([]GrowthRow{{Events: 10_000, Stream: 10_001, Sessions: 8000, Users: 2000, SeedSeconds: 1.5, SeedRate: 6667,
		StreamPerEvent: 800, ProjPerEvent: 200, TotalPerEvent: 1000, TotalBytes: 10_001_000, RebuildSeconds: 0.8, RebuildRate: 12_500,
		RebuildHWMMiB: 80, ValidateRPS: 12_000, ValidateRel: 0.7, ValidateP99ms: 3.2, ServerHWMMiB: 90, WallSeconds: 140}})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	// Every row has as many cells as the header.
	if h, r := strings.Count(lines[0], "|"), strings.Count(lines[2], "|"); h != r {
		t.Fatalf("header has %d bars, row %d:\n%s", h, r, out)
	}
	for _, want := range []string{"10k (10001)", "8k (2k)", "800 + 200 = 1000 B", "12000 req/s, 0.70×", "2.3 min"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("row lacks %q: %s", want, lines[2])
		}
	}
}
