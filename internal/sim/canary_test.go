package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/experiment"
)

// canaryRun runs a canary of balancing policy cand on a node whose active
// balancing policy is base: 8 workers, Zipf traffic, healthy under least-loaded.
func canaryRun(t testing.TB, base, cand string, traceSeed, splitSeed uint64) *CanaryReport {
	t.Helper()
	models, reqs, err := Generate(GenConfig{Kind: KindZipf, Jobs: 9000, Rate: 0.35, Seed: traceSeed, Checkpoints: 12})
	if err != nil {
		t.Fatal(err)
	}
	cfg := node(4, 2, 24e9, "lru")
	cfg.Policies.Balancing = base
	spec, err := ParseCanary("balancing=" + cand)
	if err != nil {
		t.Fatal(err)
	}
	// Unit traffic: a balancer needs a choice of workers, which a
	// one-worker group at the 5% step would not give it.
	spec.Unit = experiment.Traffic
	rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs},
		Options{Wall: fakeWall(), Seed: 7, Canary: &Canary{Spec: spec, Seed: splitSeed, Config: experiment.Config{Deadline: 7 * time.Hour}}})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.Canary == nil {
		t.Fatal("no canary in the report")
	}
	return rep.Canary
}

// TestCanaryRollsBackRoundRobin plants a balancer that ignores where models
// are resident: the canary must roll it back before it promotes.
func TestCanaryRollsBackRoundRobin(t *testing.T) {
	c := canaryRun(t, "least-loaded", "round-robin", 21, 1)
	t.Logf("%s at %.0f s, step %d: %s", c.Verdict, c.DecidedAtS, c.Step, c.Reason)
	// The tests pool every step with a baseline, so the rollback may
	// come at any of them, never at the 100% step.
	if c.Verdict != "rolled_back" || c.Steps[c.Step] >= 100 {
		t.Fatalf("verdict %s at step %d (%s), want rolled_back at a step with a baseline", c.Verdict, c.Step, c.Reason)
	}
	if !strings.Contains(c.Reason, "worse") {
		t.Errorf("reason %q does not say the candidate was worse", c.Reason)
	}
}

// TestCanaryPromotesLeastLoaded plants the better balancer against a
// round-robin baseline.
func TestCanaryPromotesLeastLoaded(t *testing.T) {
	c := canaryRun(t, "round-robin", "least-loaded", 22, 2)
	t.Logf("%s at %.0f s: %s", c.Verdict, c.DecidedAtS, c.Reason)
	if c.Verdict != "promoted" {
		t.Fatalf("verdict %s (%s), want promoted", c.Verdict, c.Reason)
	}
}

// TestCanaryAAInSim runs 20 A/A canaries (least-loaded against itself) on
// different traces and splits: none may be rolled back.
func TestCanaryAAInSim(t *testing.T) {
	n := 20
	if testing.Short() || raceEnabled {
		n = 5 // the race detector checks the concurrency, not the statistics
	}
	rolledBack := 0
	for i := range n {
		c := canaryRun(t, "least-loaded", "least-loaded", uint64(100+i), uint64(200+i))
		// A canary that never ruled out a 20% regression ends
		// inconclusive at its deadline (the baseline keeps serving): not
		// a rollback, so every rollback here is a false alarm.
		if c.Verdict == "rolled_back" {
			rolledBack++
			t.Errorf("A/A canary %d rolled back at %.0f s: %s", i, c.DecidedAtS, c.Reason)
		}
	}
	t.Logf("%d A/A canaries: %d rolled back", n, rolledBack)
}

// TestCanaryReportShape checks the JSON and markdown the CLI prints.
func TestCanaryReportShape(t *testing.T) {
	models, reqs, err := Generate(GenConfig{Kind: KindZipf, Jobs: 200, Rate: 0.6, Seed: 5, Checkpoints: 12})
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := ParseCanary("scheduling=edf")
	rep, err := Run(context.Background(), node(2, 2, 24e9, "lru"), models, &Trace{Requests: reqs},
		Options{Wall: fakeWall(), Canary: &Canary{Spec: spec, Config: experiment.Config{StepDuration: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rep)
	var got struct {
		Canary struct {
			Verdict    string            `json:"verdict"`
			DecidedAtS *float64          `json:"decided_at_s"`
			Evidence   []json.RawMessage `json:"evidence"`
		} `json:"canary"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Canary.Verdict != "inconclusive" || got.Canary.DecidedAtS == nil || len(got.Canary.Evidence) == 0 {
		t.Errorf("canary %+v, want an inconclusive verdict (200 jobs cannot pass an hour-long step) with evidence", got.Canary)
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil || !strings.Contains(md.String(), "## Canary") {
		t.Errorf("markdown lacks the canary section: %v", err)
	}
	if _, err := ParseCanary("edf"); err == nil {
		t.Error("ParseCanary accepted a flag without KIND=")
	}
}
