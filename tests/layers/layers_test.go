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
		{"sdk", []string{"internal", "cmd", "policies", "plugins"},
			"the SDKs are the public contract; a policy, plugin or worker author builds against them alone"},
		{"internal/clock", []string{"internal"}, "injected time is a leaf"},
		{"internal/cost", []string{"internal"}, "the cost model is a leaf: the simulator, the estimates and the simulated worker share it"},
		{"internal/stats", []string{"internal"}, "the experiments' statistics are a leaf"},
		{"internal/predict", []string{"internal"}, "the predictor takes time as an argument and imports nothing of the kernel"},
		{"policies", []string{"internal", "cmd", "plugins"},
			"a built-in is written once against sdk/policy, built natively and to WASM"},
		{"plugins", []string{"internal", "cmd", "policies"},
			"plugins are separate processes speaking sdk/plugin"},
		{"internal/decision", []string{"internal"},
			"the decision contract is a leaf: everything that decides speaks it, and the queue takes its Class from it (job.Class is an alias)"},
		{"internal/policy", []string{"internal/dispatch", "internal/tier", "internal/experiment", "internal/sim", "internal/api", "internal/config", "internal/node", "internal/cluster"},
			"the policy host answers the decision contract; it does not know who asks"},
		{"internal/sim", []string{"internal/config", "internal/api", "internal/plugin", "internal/node", "internal/cluster"},
			"the simulator is an alternative assembly of the decision core, not a layer over the daemon"},
		{"internal/tune", []string{"internal/config", "internal/api", "internal/plugin", "internal/node", "internal/cluster"},
			"the tuner searches in the simulator; config mapping is node's"},
		{"internal/api", []string{"internal/tune", "internal/sim", "internal/node"},
			"the HTTP API takes the tuner's trace and status through its own interfaces (api.TraceSource, Deps.TuneStatus), wired by the node: it sits beside the simulator, not above it"},
		{"internal/dispatch", []string{"internal/api", "internal/experiment", "internal/sim", "internal/tune", "internal/config", "internal/node", "internal/cluster", "internal/plugin"},
			"the dispatcher asks policies through the contract and knows nothing above it"},
		{"internal/experiment", []string{"internal/dispatch", "internal/shadow", "internal/sim", "internal/api", "internal/config", "internal/node"},
			"experiments split and judge decisions through the contract; they observe jobs through job.Event"},
		{"internal/job", []string{"internal/dispatch", "internal/api", "internal/policy", "internal/tier", "internal/config", "internal/node"},
			"the durable queue is below everything that moves jobs"},
		{"internal/tier", []string{"internal/catalog", "internal/dispatch", "internal/policy", "internal/api", "internal/config", "internal/node", "internal/plugin"},
			"the tiers move bytes: the catalog is handed to them as a Resolver of l4.Source, the plugin host as sources, the eviction policy as evictors"},
		{"internal/l4", []string{"internal", "sdk"},
			"where a model's bytes live is a leaf the catalog and the tiers share, so that neither sits on the other"},
		{"internal/catalog", []string{"internal/tier", "internal/dispatch", "internal/policy", "internal/api", "internal/config", "internal/node", "internal/plugin"},
			"the catalog says where bytes are (l4.Source); the tiers move them; neither imports the other"},
		{"internal/workflow", []string{"internal"},
			"graph parsing is a leaf: the queue keeps what it derives, and the cost model's reading of it (dispatch.JobWork) is the estimator's"},
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

// TestConfigIsNotTheDaemon: internal/config composes every package's
// section, so it must import sections, not servers: through the HTTP API
// it would link the tuner and the simulator, whose tests load the config.
func TestConfigIsNotTheDaemon(t *testing.T) {
	g := load(t)
	for d := range g.deps("internal/config") {
		switch d {
		case "internal/api", "internal/api/comfy", "internal/api/dashboard", "internal/sim", "internal/tune", "internal/node", "internal/cluster", "internal/plugin/host":
			t.Errorf("internal/config depends on %s: it should import that package's config section alone (as apiconfig, clusterconfig, autotune)", d)
		}
	}
}

// maxFloors bounds the longest chain of imports among the module's
// packages (cmd/kiln at the top, internal/clock or internal/cost at the
// bottom). Lower it when a change flattens the graph; a change that needs
// to raise it should say why in docs/ARCHITECTURE.md.
const maxFloors = 8

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
