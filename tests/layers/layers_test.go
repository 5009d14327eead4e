// Package layers checks the shape of kiln's import graph: which packages
// may depend on which (docs/ARCHITECTURE.md, "Layers"), and how tall the
// graph is. Go refuses cycles by itself; these tests refuse the arrows
// that compile but undo a layering decision, such as the simulator
// linking the HTTP API through kiln's config, or the policy host
// depending on the dispatcher it serves.
package layers

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/kiln-gpu/kiln/"

// graph is the module's import graph, non-test imports only, by package
// path relative to the module.
type graph map[string][]string

func load(t *testing.T) graph {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH (a machine running prebuilt test binaries)")
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	g := graph{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg := strings.TrimPrefix(fields[0], module)
		g[pkg] = nil
		for _, imp := range fields[1:] {
			if rel, ok := strings.CutPrefix(imp, module); ok {
				g[pkg] = append(g[pkg], rel)
			}
		}
	}
	return g
}

// deps returns every package of the module pkg depends on, transitively.
func (g graph) deps(pkg string) map[string]bool {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(p string) {
		for _, d := range g[p] {
			if !seen[d] {
				seen[d] = true
				walk(d)
			}
		}
	}
	walk(pkg)
	return seen
}

// under reports whether pkg is prefix or below it.
func under(pkg, prefix string) bool { return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") }

func TestLayers(t *testing.T) {
	g := load(t)
	for _, rule := range []struct {
		from   string   // a package and everything below it
		not    []string // may not depend on these, nor on anything below them
		reason string
	}{
		{"sdk", []string{"kernel", "cmd", "policies", "plugins"},
			"the SDKs are the public contract; a policy, plugin or worker author builds against them alone"},
		{"kernel/clock", []string{"kernel"}, "injected time is a leaf"},
		{"kernel/cost", []string{"kernel"}, "the cost model is a leaf: the simulator, the estimates and the simulated worker share it"},
		{"kernel/stats", []string{"kernel"}, "the experiments' statistics are a leaf"},
		{"kernel/predict", []string{"kernel"}, "the predictor takes time as an argument and imports nothing of the kernel"},
		{"policies", []string{"kernel", "cmd", "plugins"},
			"a built-in is written once against sdk/policy, built natively and to WASM"},
		{"plugins", []string{"kernel", "cmd", "policies"},
			"plugins are separate processes speaking sdk/plugin"},
		{"kernel/decision", []string{"kernel/dispatch", "kernel/policy", "kernel/tier", "kernel/experiment", "kernel/sim", "kernel/api", "kernel/config", "kernel/node"},
			"the decision contract is at the bottom: everything that decides speaks it"},
		{"kernel/policy", []string{"kernel/dispatch", "kernel/tier", "kernel/experiment", "kernel/sim", "kernel/api", "kernel/config", "kernel/node", "kernel/cluster"},
			"the policy host answers the decision contract; it does not know who asks"},
		{"kernel/sim", []string{"kernel/config", "kernel/api", "kernel/plugin", "kernel/node", "kernel/cluster"},
			"the simulator is an alternative assembly of the decision core, not a layer over the daemon"},
		{"kernel/tune", []string{"kernel/config", "kernel/api", "kernel/plugin", "kernel/node", "kernel/cluster"},
			"the tuner searches in the simulator; config mapping is node's"},
		{"kernel/dispatch", []string{"kernel/api", "kernel/experiment", "kernel/sim", "kernel/tune", "kernel/config", "kernel/node", "kernel/cluster", "kernel/plugin"},
			"the dispatcher asks policies through the contract and knows nothing above it"},
		{"kernel/job", []string{"kernel/dispatch", "kernel/api", "kernel/policy", "kernel/tier", "kernel/config", "kernel/node"},
			"the durable queue is below everything that moves jobs"},
		{"kernel/tier", []string{"kernel/dispatch", "kernel/policy", "kernel/api", "kernel/config", "kernel/node", "kernel/plugin"},
			"the tiers move bytes: the plugin host is handed to them as sources, the eviction policy as evictors"},
		{"kernel/catalog", []string{"kernel/tier", "kernel/dispatch", "kernel/api", "kernel/config", "kernel/node", "kernel/plugin"},
			"the catalog says where bytes are; the tiers, which move them, know the catalog"},
		{"kernel/workflow", []string{"kernel/job", "kernel/decision", "kernel/dispatch", "kernel/api"},
			"graph parsing is a leaf: the queue keeps what it derives"},
	} {
		for pkg := range g {
			if !under(pkg, rule.from) {
				continue
			}
			for d := range g.deps(pkg) {
				if slices.ContainsFunc(rule.not, func(n string) bool { return under(d, n) }) {
					t.Errorf("%s depends on %s (%s)", pkg, d, rule.reason)
				}
			}
		}
	}
}

// TestConfigIsNotTheDaemon: kernel/config composes every package's
// section, so it must import sections, not servers: through the HTTP API
// it would link the tuner and the simulator, whose tests load the config.
func TestConfigIsNotTheDaemon(t *testing.T) {
	g := load(t)
	for d := range g.deps("kernel/config") {
		switch d {
		case "kernel/api", "kernel/api/comfy", "kernel/api/dashboard", "kernel/sim", "kernel/tune", "kernel/node", "kernel/cluster", "kernel/plugin/host":
			t.Errorf("kernel/config depends on %s: it should import that package's config section alone (as apiconfig, clusterconfig, autotune)", d)
		}
	}
}

// maxFloors bounds the longest chain of imports among the module's
// packages (cmd/kiln at the top, kernel/clock or kernel/cost at the
// bottom). Lower it when a change flattens the graph; a change that needs
// to raise it should say why in docs/ARCHITECTURE.md.
const maxFloors = 12

func TestFloors(t *testing.T) {
	g := load(t)
	height := map[string]int{}
	below := map[string]string{}
	var h func(string) int
	h = func(p string) int {
		if v, ok := height[p]; ok {
			return v
		}
		best := 1
		for _, d := range g[p] {
			if v := h(d) + 1; v > best {
				best, below[p] = v, d
			}
		}
		height[p] = best
		return best
	}
	top, most := "", 0
	for p := range g {
		if v := h(p); v > most || (v == most && p < top) {
			top, most = p, v
		}
	}
	chain := []string{top}
	for p := top; below[p] != ""; p = below[p] {
		chain = append(chain, below[p])
	}
	t.Logf("%d floors: %s", most, strings.Join(chain, " → "))
	if most > maxFloors {
		t.Errorf("the import graph is %d floors tall, more than %d: %s", most, maxFloors, strings.Join(chain, " → "))
	}
}
