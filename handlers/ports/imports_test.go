package ports_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/sessionledger/ledger/"

// adapters are the only packages (besides the binaries and tools) that may
// reach NATS or Pebble.
var adapters = []string{module + "eventstore", module + "projections", module + "cmd/", module + "scripts/"}

func isAdapter(pkg string) bool {
	for _, a := range adapters {
		if pkg == a || strings.HasPrefix(pkg, a+"/") || (strings.HasSuffix(a, "/") && strings.HasPrefix(pkg, a)) {
			return true
		}
	}
	return false
}

// fakes is the in-memory fake of the ports, for unit tests only: no
// package but a test may depend on it, and it sees only the domain and the
// ports, as the application does.
const fakes = module + "handlers/handlerstest"

// pureDeps are the only modules outside the standard library the domain may
// depend on: cryptography with no I/O (curve25519-voi signs events in half
// crypto/ed25519's time, with the same bytes) and the CPU-feature probe
// they use.
var pureDeps = []string{"golang.org/x/crypto", "golang.org/x/sys/cpu", "github.com/oasisprotocol/curve25519-voi"}

func pure(dep string) bool {
	if !strings.Contains(strings.Split(dep, "/")[0], ".") {
		return true // the standard library
	}
	for _, p := range pureDeps {
		if dep == p || strings.HasPrefix(dep, p+"/") {
			return true
		}
	}
	return false
}

func infrastructure(dep string) bool {
	return strings.HasPrefix(dep, "github.com/nats-io/") || strings.HasPrefix(dep, "github.com/cockroachdb/pebble") ||
		strings.HasPrefix(dep, "github.com/ThreeDotsLabs/")
}

// TestImportRule: the domain is pure and the application (handlers/...)
// sees ports, not adapters; only the adapters and the binaries import NATS,
// Pebble or watermill; only tests use the fake of the ports. It reads the
// real dependency graph with go list (whose Deps leave tests out).
func TestImportRule(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, module+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		deps[f[0]] = f[1:]
	}
	// Positive control: the graph is read right if the event store is seen
	// to depend on NATS.
	if !hasDep(deps[module+"eventstore"], "github.com/nats-io/nats.go") {
		t.Fatalf("the event store does not seem to depend on nats.go; the dependency graph was misread:\n%s", out)
	}
	if _, ok := deps[fakes]; !ok {
		t.Fatalf("%s is not in the dependency graph; update this test", fakes)
	}
	for pkg, ds := range deps {
		for _, d := range ds {
			switch {
			case strings.HasPrefix(pkg, module+"domain") && !pure(d):
				t.Errorf("%s (the domain) depends on %s: it must stay the standard library and pure cryptography (pureDeps)", pkg, d)
			case strings.HasPrefix(pkg, module+"handlers") && (strings.HasPrefix(d, module+"eventstore") || strings.HasPrefix(d, module+"projections")):
				t.Errorf("%s (the application) depends on the adapter %s: declare a port instead", pkg, d)
			case infrastructure(d) && !isAdapter(pkg):
				t.Errorf("%s depends on %s: only eventstore, projections and the binaries may", pkg, d)
			case d == fakes:
				t.Errorf("%s depends on %s: it is for tests only", pkg, d)
			case pkg == fakes && strings.HasPrefix(d, module) && d != module+"domain" && d != module+"handlers/ports":
				t.Errorf("%s (the fake of the ports) depends on %s: it may see only the domain and the ports", pkg, d)
			}
		}
	}
}

func hasDep(ds []string, want string) bool {
	for _, d := range ds {
		if d == want {
			return true
		}
	}
	return false
}
