package sim

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/kernel/experiment"
)

// The experiments' error-rate checks (issue 14, kernel/experiment/
// RATIONALE.md): A/A experiments of every kind must roll back at most at
// their stated alpha, and planted bad policies (badpolicies_test.go) must
// be rolled back, on bursty, drifting workloads at several loads. The quick
// version runs in `make test`; `make bench-experiments` runs the full one
// (KILN_BENCH_EXPERIMENTS names the file its markdown table goes to).

// trialKind is one policy kind's A/A and planted-bad experiment.
type trialKind struct {
	kind, active, bad string
	typ               experiment.Type
}

var trialKinds = []trialKind{
	{kind: "scheduling", active: "priority", bad: "test-batch-first", typ: experiment.Canary},
	{kind: "balancing", active: "affinity", bad: "test-busiest", typ: experiment.Canary},
	{kind: "batching", active: "same-model", bad: "test-hold", typ: experiment.Canary},
	{kind: "eviction", active: "gdsf", bad: "test-mru", typ: experiment.Switchback},
}

// trial builds one experiment of k at load with candidate cand.
func (k trialKind) trial(t testing.TB, cand string, load float64, span time.Duration, seed uint64) ExperimentTrial {
	t.Helper()
	cfg, err := LoadBaseline("../../configs", BaselineKiln, "policies."+k.kind+"="+k.active)
	if err != nil {
		t.Fatal(err)
	}
	spec := experiment.Spec{Kind: k.kind, Policy: cand, Type: k.typ}
	if k.typ == experiment.Switchback {
		// Short windows: a 2 h switchback then has 30 window pairs.
		spec.Window, spec.BurnIn = experiment.Duration(2*time.Minute), experiment.Duration(30*time.Second)
	}
	return ExperimentTrial{Workload: ExperimentWorkload{Load: load, Span: span, Seed: 1000 + seed}, Node: cfg, Spec: spec, Seed: seed + 1,
		Config: experiment.Config{Deadline: span}}
}

// outcome classifies a finished trial: "worse" (a canary rolled back on
// the statistics, or an A/B test or switchback that concluded worse: a
// false alarm under A/A, a detection otherwise), "rolled_back_other" (a
// guard or a fault), or the verdict itself (promoted, inconclusive,
// no_difference, better).
func outcome(c *CanaryReport) string {
	switch {
	case c.Verdict == "worse" || c.Verdict == "rolled_back" && strings.Contains(c.Reason, "worse than the baseline"):
		return "worse"
	case c.Verdict == "rolled_back":
		return "rolled_back_other"
	}
	return c.Verdict
}

// runTrials runs n trials of k in parallel (par at a time) and counts
// their outcomes.
func runTrials(t testing.TB, k trialKind, cand string, load float64, span time.Duration, n, par int, seed0 uint64) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := k.trial(t, cand, load, span, seed0+uint64(i)).Run(context.Background())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("%s %s load %.1f seed %d: %v", k.kind, cand, load, i, err)
				return
			}
			o := outcome(c)
			counts[o]++
			if testing.Verbose() && (o == "worse") == (cand == k.active) {
				t.Logf("%s %s load %.1f seed %d: %s at %.0f s: %s", k.kind, cand, load, seed0+uint64(i), c.Verdict, c.DecidedAtS, c.Reason)
			}
		}()
	}
	wg.Wait()
	return counts
}

// TestExperimentErrorRatesQuick is the quick check of `make test`: A/A
// experiments of every kind on one-hour bursty workloads at 0.6 and 0.9
// of capacity. With alpha = 0.02 per experiment, two or more false
// rollbacks out of 8 happen with probability ≈ 0.011 for a valid test;
// the old iid batch-means test rolled back 6 of 10 scheduling A/A
// canaries at 0.9. The planted bad scheduler must not be promoted (an
// hour is too short to demand its rollback; the full bench measures that).
func TestExperimentErrorRatesQuick(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("statistics, not concurrency: skipped under -race and -short")
	}
	for _, k := range trialKinds {
		t.Run(k.kind, func(t *testing.T) {
			c := runTrials(t, k, k.active, 0.9, time.Hour, 4, 2, 1)
			for o, n := range runTrials(t, k, k.active, 0.6, time.Hour, 4, 2, 11) {
				c[o] += n
			}
			t.Logf("A/A %s: %v", k.kind, c)
			if c["worse"] >= 2 {
				t.Errorf("A/A %s experiments: %d of 8 found a difference, want at most 1 at alpha 0.02", k.kind, c["worse"])
			}
		})
	}
	k := trialKinds[0]
	c := runTrials(t, k, k.bad, 0.9, time.Hour, 3, 2, 21)
	t.Logf("planted %s: %v", k.bad, c)
	if c["promoted"] >= 2 {
		t.Errorf("planted %s: %v, want at most 1 of 3 promoted", k.bad, c)
	}
}

// TestBenchExperiments is `make bench-experiments`: for every kind and
// load, the A/A false-rollback rate and the planted policy's rollback
// rate (power), with Wilson 95% intervals, and the planted policy's effect
// measured by running it alone on the same workloads.
func TestBenchExperiments(t *testing.T) {
	out := os.Getenv("KILN_BENCH_EXPERIMENTS")
	if out == "" {
		t.Skip("set KILN_BENCH_EXPERIMENTS=FILE (make bench-experiments)")
	}
	runs, badRuns := 40, 20
	par := 2
	span := 2 * time.Hour
	var b strings.Builder
	fmt.Fprintf(&b, "Workloads: 2 h of on/off bursty arrivals (exponential periods of 5 min, ×1.8 / ×0.3), Zipf(0.9) over 30 checkpoints "+
		"(+ LoRAs, VAEs, ControlNets ≈ 50 models) whose favourite changes every 40 min, 30%% interactive with a 30 s deadline; "+
		"load as a fraction of %.2f jobs/s (the node's throughput on this mix); configs/kiln-default.yaml (4 GPUs × 2 workers). "+
		"Canaries: steps 5,25,50,100, confidence 0.98 (alpha 0.02 per experiment); eviction: switchbacks of 2 min windows, 30 s burn-in. "+
		"%d A/A and %d planted runs per kind and load, each on its own trace and split seed. Intervals: Wilson 95%%.\n\n", expDefaultKilnCapHz, runs, badRuns)
	fmt.Fprintln(&b, "| kind | load | A/A false rollbacks | A/A stalled | planted policy | its effect alone (mean latency, deadline misses) | rolled back (power) | stalled |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---|---|---:|---:|")
	for _, k := range trialKinds {
		for _, load := range []float64{0.3, 0.6, 0.9} {
			aa := runTrials(t, k, k.active, load, span, runs, par, 100)
			bad := runTrials(t, k, k.bad, load, span, badRuns, par, 500)
			eff := plantedEffect(t, k, load, span)
			line := fmt.Sprintf("| %s | %.1f | %s | %d | %s | %s | %s | %d |", k.kind, load, wilson(aa["worse"], runs), aa["stalled"], k.bad, eff,
				wilson(bad["worse"], badRuns), bad["stalled"])
			fmt.Fprintln(&b, line)
			t.Log(line)
		}
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// plantedEffect runs the active and the planted policy alone on three of
// the bench's workloads and reports the planted one's effect.
func plantedEffect(t testing.TB, k trialKind, load float64, span time.Duration) string {
	var lat, miss [2]float64
	for s := range uint64(3) {
		for i, pol := range []string{k.active, k.bad} {
			cfg, err := LoadBaseline("../../configs", BaselineKiln, "policies."+k.kind+"="+k.active)
			if err != nil {
				t.Fatal(err)
			}
			switch k.kind {
			case "scheduling":
				cfg.Policies.Scheduling = pol
			case "balancing":
				cfg.Policies.Balancing = pol
			case "batching":
				cfg.Policies.Batching = pol
			case "eviction":
				cfg.Policies.Eviction = pol
			}
			models, reqs, err := ExperimentWorkload{Load: load, Span: span, Seed: 1000 + 500 + s}.Generate()
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{Wall: fakeWall()})
			if err != nil {
				t.Fatal(err)
			}
			lat[i] += rep.MeanLatencyS
			miss[i] += 1 - rep.SLOAttainment
		}
	}
	return fmt.Sprintf("%+.0f%%, %+.1f pts", 100*(lat[1]/lat[0]-1), 100*(miss[1]-miss[0])/3)
}

// wilson formats x of n with its Wilson 95% interval.
func wilson(x, n int) string {
	if n == 0 {
		return "–"
	}
	const z = 1.959964
	p, nn := float64(x)/float64(n), float64(n)
	d := 1 + z*z/nn
	c := (p + z*z/(2*nn)) / d
	h := z * math.Sqrt(p*(1-p)/nn+z*z/(4*nn*nn)) / d
	return fmt.Sprintf("%d/%d = %.0f%% [%.0f, %.0f]", x, n, 100*p, 100*max(c-h, 0), 100*min(c+h, 1))
}
