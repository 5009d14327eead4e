package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/stats"
)

// TestPrintRecord checks that the report names what issues 7 and 14 ask
// of it: arms, n, effect with interval, p-value, verdict, SRM check, when
// it was decided and the smallest effect it could have detected.
func TestPrintRecord(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := experiment.Record{ID: "exp-1", State: experiment.RolledBack, Verdict: "rolled_back", Reason: "the candidate is worse",
		Spec:     experiment.Spec{Kind: "scheduling", Policy: "fifo", Type: experiment.Canary, Steps: []int{5, 25, 50, 100}},
		Baseline: "priority@1", Candidate: "fifo@1", StartedAt: t0, EndedAt: t0.Add(time.Hour),
		Assignment: experiment.Assignment{Unit: experiment.Workers, Seed: 9, CandidateWorkers: []string{"w0"}, BaselineWorkers: []string{"w1"},
			JobShare: 0.125, BaselineShare: 0.125},
		Decisions: []experiment.Decision{{AtS: 0, Action: "start", Reason: "canary"}, {AtS: 1390, Action: "rollback", Reason: "worse"}},
		Power: []experiment.Power{{Metric: "latency_s", Detectable: 2.5, NoWorseThan: 1.5, DetectableRel: 0.25, NoWorseThanRel: 0.15, Bounded: true},
			{Metric: "interactive_latency_s"}},
		Report: &experiment.Report{Share: 5, Verdict: stats.Worse,
			Arms: [2]experiment.ArmReport{{Arm: "baseline", Policy: "priority@1", N: 54}, {Arm: "candidate", Policy: "fifo@1", N: 50}},
			Comparisons: []experiment.Comparison{{Metric: "deadline_miss_rate", Test: "sequential", NA: 54, NB: 50, Effect: 0.75,
				Low: 0.44, High: 1.08, P: 1e-15, Verdict: stats.Worse, Gating: true}},
			SRM: &experiment.SRMResult{Expected: 0.5, Baseline: 54, Candidate: 50, P: 0.69}}}
	var b bytes.Buffer
	if err := writeRecord(&b, rec); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"baseline", "candidate", "priority@1", "fifo@1", " 54 ", "+0.75", "[0.44, 1.08]", "1e-15", "worse",
		"SRM: counts 54/50", "ok", "rollback", "w0", "decided at 3600s", "latency_s: +2.5 (+25.0%); no worse than +1.5 (+15.0%)",
		"interactive_latency_s: nothing bounded"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
