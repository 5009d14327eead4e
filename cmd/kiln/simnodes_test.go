package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-gpu/kiln/internal/sim"
)

// TestSimNodes: `kiln sim --nodes N --set policies.routing=P --report json`
// (issue 15's contract) simulates a cluster of N nodes and reports, beside
// the usual figures, cold_loads, p95_latency_s and the cluster section;
// --nodes 0 is refused with a message.
func TestSimNodes(t *testing.T) {
	models, reqs, err := sim.Generate(sim.GenConfig{Kind: sim.KindZipf, Jobs: 150, Rate: 0.5, Checkpoints: 8, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, f func(*os.File) error) string {
		p := filepath.Join(dir, name)
		fh, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if err := f(fh); err != nil {
			t.Fatal(err)
		}
		return p
	}
	trace := write("trace.csv", func(f *os.File) error { return sim.WriteTrace(f, reqs) })
	modelsCSV := write("models.csv", func(f *os.File) error { return sim.WriteModels(f, models) })
	code, out, stderr := runKiln(t, "sim", "--trace", trace, "--models", modelsCSV, "--nodes", "3", "--seed", "4",
		"--set", "policies.routing=least-loaded", "--set", "policies.native_builtins=true",
		"--set", "devices.simulated=[{name: a, memory_bytes: 42949672960, h2d_bytes_per_s: 25e9, compute_factor: 1}]", "--report", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Jobs      int      `json:"jobs"`
		Completed int      `json:"completed"`
		ColdLoads *int64   `json:"cold_loads"`
		P95       *float64 `json:"p95_latency_s"`
		Cluster   *struct {
			Nodes       int    `json:"nodes"`
			Routing     string `json:"routing"`
			JobsPerNode []int  `json:"jobs_per_node"`
		} `json:"cluster"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	if rep.ColdLoads == nil || rep.P95 == nil || rep.Cluster == nil {
		t.Fatalf("report lacks cold_loads, p95_latency_s or cluster:\n%s", out)
	}
	if rep.Cluster.Nodes != 3 || len(rep.Cluster.JobsPerNode) != 3 || !strings.HasPrefix(rep.Cluster.Routing, "least-loaded@") {
		t.Errorf("cluster section %+v; want 3 nodes routed by least-loaded", rep.Cluster)
	}
	if rep.Completed != rep.Jobs || rep.Jobs != len(reqs) {
		t.Errorf("completed %d of %d jobs (trace %d)", rep.Completed, rep.Jobs, len(reqs))
	}
	code, _, stderr = runKiln(t, "sim", "--trace", trace, "--models", modelsCSV, "--nodes", "0")
	if code == 0 || !strings.Contains(stderr, "--nodes 0") {
		t.Errorf("--nodes 0: exit %d, %q; want a refusal naming the flag", code, stderr)
	}
}
