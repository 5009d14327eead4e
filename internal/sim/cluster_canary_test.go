package sim

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/experiment"
)

// routingTrial is one routing experiment on a simulated cluster of nodes
// nodes: the issue 14 workload (bursty, drifting Zipf) at load × the
// cluster's capacity, the active routing policy affinity.
func routingTrial(t testing.TB, typ experiment.Type, cand string, nodes int, load float64, span time.Duration, seed uint64) *CanaryReport {
	t.Helper()
	cfg, err := LoadBaseline("../../configs", BaselineKiln, "policies.routing=affinity")
	if err != nil {
		t.Fatal(err)
	}
	w := ExperimentWorkload{Load: load, Capacity: expDefaultKilnCapHz * float64(nodes), Span: span, Seed: 2000 + seed}
	models, reqs, err := w.Generate()
	if err != nil {
		t.Fatal(err)
	}
	spec := experiment.Spec{Kind: "routing", Policy: cand, Type: typ}
	rep, err := RunCluster(context.Background(), ClusterConfig{Node: cfg, Nodes: nodes, NetworkDelay: 2 * time.Millisecond},
		models, &Trace{Requests: reqs}, Options{Wall: clock.NewFake(time.Unix(0, 0)), Seed: int64(seed),
			Canary: &Canary{Spec: spec, Config: experiment.Config{Deadline: span}, Seed: seed + 1}})
	if err != nil {
		t.Fatalf("routing %s of %s, seed %d: %v", typ, cand, seed, err)
	}
	if rep.Canary == nil {
		t.Fatalf("routing %s of %s, seed %d: no experiment in the report", typ, cand, seed)
	}
	return rep.Canary
}

// TestClusterRoutingExperimentSplitsJobs: a routing canary and an A/B test
// on a simulated cluster route each arm's own jobs and count every
// finished job, wherever it ran, for the arm that routed it (the arms'
// counts follow the shares), and report a verdict with the same
// statistics as the other kinds.
func TestClusterRoutingExperimentSplitsJobs(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("statistics, not concurrency: skipped under -race and -short")
	}
	for _, typ := range []experiment.Type{experiment.Canary, experiment.AB} {
		t.Run(string(typ), func(t *testing.T) {
			c := routingTrial(t, typ, "random", 2, 0.6, 30*time.Minute, 1)
			if c.Kind != "routing" || c.Report == nil || len(c.Report.Arms) != 2 || len(c.Report.Comparisons) == 0 {
				t.Fatalf("report: %+v", c)
			}
			base, cand := c.Report.Arms[0], c.Report.Arms[1]
			if base.N == 0 || cand.N == 0 {
				t.Fatalf("arms counted %d and %d jobs: %+v", base.N, cand.N, c.Report.Arms)
			}
			switch c.Verdict {
			case "promoted", "rolled_back", "inconclusive", "better", "worse", "no_difference":
			default:
				t.Fatalf("verdict %q", c.Verdict)
			}
			t.Logf("routing %s of random against affinity: %s (%s); baseline n %d p95 %.1f s, candidate n %d p95 %.1f s",
				typ, c.Verdict, c.Reason, base.N, base.P95S, cand.N, cand.P95S)
		})
	}
}

// TestClusterRoutingAAQuick: A/A routing experiments (affinity against
// itself) on two-node clusters must not find a difference more often than
// their alpha: with alpha = 0.02 per experiment, two or more false alarms
// out of 8 happen with probability ≈ 0.011 for a valid test. `KILN_BENCH_
// ROUTING_RUNS=N` runs N of each instead and prints the rates (BENCHMARKS.md).
func TestClusterRoutingAAQuick(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("statistics, not concurrency: skipped under -race and -short")
	}
	runs, span := 4, time.Hour
	if s := os.Getenv("KILN_BENCH_ROUTING_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("KILN_BENCH_ROUTING_RUNS=%q: want a positive number", s)
		}
		runs = n
	}
	alarms := 0
	for _, typ := range []experiment.Type{experiment.Canary, experiment.AB} {
		out := make([]string, runs)
		parallel(runs, func(i int) {
			c := routingTrial(t, typ, "affinity", 2, 0.6+0.3*float64(i%2), span, uint64(100+i))
			out[i] = outcome(c)
		})
		counts := map[string]int{}
		for _, o := range out {
			counts[o]++
		}
		k := trialKind{typ: typ}
		n := falseAlarms(k, counts)
		alarms += n
		t.Logf("A/A routing %s (2 nodes, 1 h, loads 0.6 and 0.9): %v; false alarms %d of %d (%s)", typ, counts, n, runs, wilson(n, runs))
	}
	if limit := max(2, 2*runs*5/100+2); alarms >= limit {
		t.Errorf("A/A routing experiments: %d false alarms of %d, want fewer than %d", alarms, 2*runs, limit)
	}
}
