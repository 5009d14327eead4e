package predict

import (
	"math"
	"testing"
	"time"
)

// TestDemandCountsJobsAndHalvesEveryHalfLife: each job adds 1 to each of
// its models; a count halves every DemandHalfLife and agrees with the
// predictor's frequency count on the same jobs; a model nobody asked for
// in many half-lives is forgotten (reads 0).
func TestDemandCountsJobsAndHalvesEveryHalfLife(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := NewDemand()
	p := New(Config{})
	for _, j := range []struct {
		at     time.Duration
		models []string
	}{{0, []string{"a", "b"}}, {time.Minute, []string{"a"}}, {2 * time.Minute, []string{"a"}}} {
		d.Observe(t0.Add(j.at), j.models)
		p.Observe(t0.Add(j.at), j.models)
	}
	now := t0.Add(2*time.Minute + DemandHalfLife)
	if got := d.Of(now, "a"); math.Abs(got-p.Count(now, "a")) > 1e-12 || got < 1.4 || got > 1.5 {
		t.Errorf("a: %v one half-life after three jobs, want about 1.5 and the predictor's %v", got, p.Count(now, "a"))
	}
	if got, want := d.Of(now, "b"), math.Exp2(-float64(2*time.Minute+DemandHalfLife)/float64(DemandHalfLife)); math.Abs(got-want) > 1e-12 {
		t.Errorf("b: %v, want %v", got, want)
	}
	if got := d.Of(now, "c"); got != 0 {
		t.Errorf("c, never asked for: %v", got)
	}
	late := now.Add(20 * DemandHalfLife)
	d.Observe(late, []string{"c"})
	if _, kept := d.counts["b"]; kept {
		t.Error("b, 20 half-lives without a job, is still kept")
	}
	var none *Demand
	none.Observe(late, []string{"a"})
	if none.Of(late, "a") != 0 {
		t.Error("a nil Demand reads non-zero")
	}
}
