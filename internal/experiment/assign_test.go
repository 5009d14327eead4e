package experiment

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// TestAssignmentBalancesWorkAndModels feeds a canary's split a stream of
// jobs whose run times differ tenfold between models (Zipf popularity):
// each arm must get its share of every class's estimated work within a
// few jobs, and of every model's jobs within one, where dealing jobs in
// turn lets the work drift apart like a random walk.
func TestAssignmentBalancesWorkAndModels(t *testing.T) {
	for _, shares := range [][3]float64{{0.5, 0.5, 0}, {0.25, 0.25, 0.5}} {
		r := &routing{seed: 7, shares: shares, assign: map[string]int8{},
			byClass: map[job.Class]*classWork{}, byModels: map[string]*[3]float64{}}
		rng := rand.New(rand.NewPCG(1, 2))
		zipf := rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.2, 1, 29)
		type key struct {
			class job.Class
			model string
		}
		work := map[job.Class]*[3]float64{job.Interactive: {}, job.Batch: {}}
		count := map[key]*[3]float64{}
		longest := 0.0
		for i := range 5000 {
			class := job.Batch
			if rng.Float64() < 0.3 {
				class = job.Interactive
			}
			m := int(zipf.Uint64())
			est := time.Duration(2+m%10*4) * time.Second
			longest = max(longest, est.Seconds())
			model := fmt.Sprintf("m%02d", m)
			j := decision.JobView{ID: fmt.Sprintf("j%05d", i), Class: class, BatchKey: model, EstimatedCost: est}
			g := r.jobArm(&j)
			if again := r.jobArm(&j); again != g {
				t.Fatalf("job %s assigned %d, then %d", j.ID, g, again)
			}
			work[class][g] += est.Seconds()
			k := key{class, model}
			if count[k] == nil {
				count[k] = &[3]float64{}
			}
			count[k][g]++
		}
		for class, w := range work {
			total := w[0] + w[1] + w[2]
			for g := range 3 {
				if off := math.Abs(w[g] - shares[g]*total); off > 3*longest {
					t.Errorf("shares %v, %s: group %d has %.0f s of %.0f s, %.0f s off its share (more than 3 of the longest jobs)",
						shares, class, g, w[g], total, off)
				}
			}
		}
		// With a production share the arms' strata advance a third of
		// the time, so each can trail by one more job.
		within := 1.0
		if shares[Production] > 0 {
			within = 2
		}
		for k, c := range count {
			if d := math.Abs(c[Baseline] - c[Candidate]); d > within {
				t.Errorf("shares %v, %s %s: baseline %v and candidate %v jobs, want within %v", shares, k.class, k.model, c[Baseline], c[Candidate], within)
			}
		}
	}
}

// TestPairedSeriesRatios checks that a relative series pairs the log of
// the ratio of the window means and skips a window whose mean is not
// positive in either arm.
func TestPairedSeriesRatios(t *testing.T) {
	p := newPairedSeries(epoch, time.Minute, 0)
	p.relative = true
	p.add(Baseline, 0, 2)
	p.add(Candidate, 0, 4)
	p.add(Candidate, 0, 4)
	p.add(Baseline, 1, 0) // not positive: no ratio
	p.add(Candidate, 1, 3)
	p.add(Baseline, 2, 5)
	p.add(Candidate, 2, 5)
	p.close(epoch.Add(3 * time.Minute))
	if len(p.diffs) != 2 || math.Abs(p.diffs[0]-math.Log(2)) > 1e-12 || p.diffs[1] != 0 {
		t.Errorf("diffs %v, want [ln 2, 0]", p.diffs)
	}
	if p.baseMean() != 3.5 {
		t.Errorf("base mean %v, want 3.5 (the paired windows' baseline means)", p.baseMean())
	}
}
