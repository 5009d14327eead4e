package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyTestReplaysATrace runs `kiln policy test --trace` as an author
// would: a module, a generated trace and its model table. The answer
// carries both simulator runs — the config's policy and the module — on
// the same trace, every job accounted for in each, and the module active
// in the second.
func TestPolicyTestReplaysATrace(t *testing.T) {
	module := filepath.Join(t.TempDir(), "hostile.wasm")
	if err := os.WriteFile(module, buildPolicy(t, "../internal/policy/testdata/hostile"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kiln := filepath.Join(binDir, "kiln")
	if out, err := exec.Command(kiln, "sim", "gen", "--kind", "bursty", "--jobs", "200", "--rate", "1", "--checkpoints", "12",
		"--interactive", "0.3", "--seed", "5", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("sim gen: %v\n%s", err, out)
	}
	out, err := exec.Command(kiln, "policy", "test", module, "--kind", "scheduling", "--samples", "50", "--json",
		"--trace", filepath.Join(dir, "trace.csv"), "--models", filepath.Join(dir, "models.csv")).Output()
	if err != nil {
		t.Fatalf("policy test: %v\n%s", err, out)
	}
	type run struct {
		Jobs, Completed, Failed int
		Policies                map[string]string
	}
	var rep struct {
		Replay *struct {
			Kind             string
			Baseline, Module run
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil || rep.Replay == nil {
		t.Fatalf("answer %s: %v", out, err)
	}
	r := rep.Replay
	for name, run := range map[string]run{"baseline": r.Baseline, "module": r.Module} {
		if run.Jobs != 200 || run.Completed+run.Failed != run.Jobs || run.Completed == 0 {
			t.Errorf("%s run: %d jobs, %d completed, %d failed; want all 200 accounted for", name, run.Jobs, run.Completed, run.Failed)
		}
	}
	if got := r.Module.Policies["scheduling"]; !strings.HasPrefix(got, "hostile@") {
		t.Errorf("module run's scheduling policy %q, want the module", got)
	}
	if got := r.Baseline.Policies["scheduling"]; strings.HasPrefix(got, "hostile@") {
		t.Errorf("baseline run's scheduling policy %q, want the config's", got)
	}
}

// TestPolicyTestReplaysRoutingOnACluster: a routing module's trace replay
// runs on a simulated cluster (three nodes unless --nodes says otherwise),
// since one node never asks its routing policy and both runs would be the
// same.
func TestPolicyTestReplaysRoutingOnACluster(t *testing.T) {
	module := filepath.Join(t.TempDir(), "hostile.wasm")
	if err := os.WriteFile(module, buildPolicy(t, "../internal/policy/testdata/hostile"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kiln := filepath.Join(binDir, "kiln")
	if out, err := exec.Command(kiln, "sim", "gen", "--kind", "bursty", "--jobs", "30", "--rate", "1", "--checkpoints", "6",
		"--seed", "5", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("sim gen: %v\n%s", err, out)
	}
	if out, err := exec.Command(kiln, "policy", "test", module, "--kind", "routing", "--nodes", "2").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "goes with --trace") {
		t.Errorf("--nodes without --trace: %v\n%s; want a usage error", err, out)
	}
	out, err := exec.Command(kiln, "policy", "test", module, "--kind", "routing", "--samples", "20", "--json",
		"--trace", filepath.Join(dir, "trace.csv"), "--models", filepath.Join(dir, "models.csv")).Output()
	if err != nil {
		t.Fatalf("policy test: %v\n%s", err, out)
	}
	var rep struct {
		Replay *struct {
			Nodes            int
			Baseline, Module struct {
				Jobs     int
				Policies map[string]string
				Cluster  *struct{ Nodes int }
			}
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil || rep.Replay == nil {
		t.Fatalf("answer %s: %v", out, err)
	}
	r := rep.Replay
	if r.Nodes != 3 || r.Module.Cluster == nil || r.Module.Cluster.Nodes != 3 {
		t.Errorf("replayed on %d nodes (cluster section %+v), want 3", r.Nodes, r.Module.Cluster)
	}
	if got := r.Module.Policies["routing"]; !strings.HasPrefix(got, "hostile@") {
		t.Errorf("module run's routing policy %q, want the module", got)
	}
	if got := r.Baseline.Policies["routing"]; got == "" || strings.HasPrefix(got, "hostile@") {
		t.Errorf("baseline run's routing policy %q, want the config's", got)
	}
}
