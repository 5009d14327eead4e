package experiment

import (
	"testing"
)

func actions(rec Record) []string {
	var out []string
	for _, d := range rec.Decisions {
		if d.Action != "hold" {
			out = append(out, d.Action)
		}
	}
	return out
}

// TestCanaryRollsBackFIFO plants FIFO scheduling where interactive jobs
// have deadlines: the candidate's group misses them behind batch jobs, and
// the canary must roll it back before it promotes (its tests pool every
// step with a baseline, so the rollback may come at a later step).
func TestCanaryRollsBackFIFO(t *testing.T) {
	d := newDriver(t, defaultWorkload(), 1, "priority", testConfig(), "")
	rec := d.start(Spec{Kind: "scheduling", Policy: "fifo", Type: Canary})
	rec = d.run(rec.ID)
	t.Logf("decisions: %v; %s", actions(rec), rec.Reason)
	if rec.State != RolledBack {
		t.Fatalf("state %s (%s), want rolled_back", rec.State, rec.Reason)
	}
	if steps := rec.Spec.Steps; steps[rec.Step] >= 100 {
		t.Errorf("rolled back at step %d (%d%%), want a step with a baseline", rec.Step, steps[rec.Step])
	}
	if got := d.host.ActiveRef(2); got != "priority@1" {
		t.Errorf("active scheduling policy is %s, want the baseline priority@1", got)
	}
	last := rec.Decisions[len(rec.Decisions)-1]
	if last.Action != "rollback" || last.Evidence == nil || last.Evidence.Verdict.String() != "worse" {
		t.Errorf("last decision %+v, want a rollback on a worse verdict", last)
	}
}

// TestCanaryPromotesPriority plants the better policy: priority against a
// FIFO baseline, which the canary promotes through every step.
func TestCanaryPromotesPriority(t *testing.T) {
	d := newDriver(t, defaultWorkload(), 2, "fifo", testConfig(), "")
	rec := d.start(Spec{Kind: "scheduling", Policy: "priority", Type: Canary})
	rec = d.run(rec.ID)
	t.Logf("decisions: %v; %s after %.0f s", actions(rec), rec.Reason, rec.EndedAt.Sub(rec.StartedAt).Seconds())
	if rec.State != Promoted {
		t.Fatalf("state %s (%s), want promoted", rec.State, rec.Reason)
	}
	if got := d.host.ActiveRef(2); got != "priority@1" {
		t.Errorf("active scheduling policy is %s after promotion, want priority@1", got)
	}
}

// TestCanaryAA runs 20 A/A canaries (the active policy against itself)
// at the default confidence: a canary's rollback is a one-sided test at
// alpha 0.02, so a valid test rolls back two or more of 20 with
// probability at most 0.06; the seeds are fixed, so the count is too.
func TestCanaryAA(t *testing.T) {
	wl := defaultWorkload()
	rollbacks, n := 0, uint64(20)
	if testing.Short() || raceEnabled {
		n = 5
	}
	for seed := uint64(100); seed < 100+n; seed++ {
		d := newDriver(t, wl, seed, "priority", testConfig(), "")
		rec := d.start(Spec{Kind: "scheduling", Policy: "priority", Type: Canary})
		rec = d.run(rec.ID)
		// A canary that has not yet ruled out a regression of
		// max_regression keeps holding (it is not a false alarm); a
		// rollback is.
		if rec.State == RolledBack {
			rollbacks++
			t.Logf("seed %d: A/A canary rolled back: %s", seed, rec.Reason)
		} else if rec.State != Promoted {
			t.Logf("seed %d: A/A canary still %s at the horizon", seed, rec.State)
		}
	}
	t.Logf("%d A/A canaries: %d rolled back", n, rollbacks)
	if rollbacks > 1 {
		t.Errorf("%d of %d A/A canaries rolled back, want at most 1 at alpha 0.02", rollbacks, n)
	}
}
