package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

// aaRuns simulates A/A experiments, looking after every pair of observations
// from the first possible look to n per arm, and returns the fraction of
// runs in which the always-valid test ever rejected, and the fraction in
// which a fixed-horizon z-test checked at the same looks ever did.
func aaRuns(runs, n int, alpha float64, proportion bool, draw func(*rand.Rand) float64, rng *rand.Rand) (seq, naive float64) {
	var seqFP, naiveFP int
	for run := 0; run < runs; run++ {
		s := NewSequential(SequentialConfig{Alpha: alpha, Proportion: proportion})
		var ma, mb moments
		seqHit, naiveHit := false, false
		for i := 0; i < n; i++ {
			x, y := draw(rng), draw(rng)
			s.AddA(x)
			s.AddB(y)
			ma.add(x)
			mb.add(y)
			if s.Look().Rejected {
				seqHit = true
			}
			if i >= 20 && !naiveHit {
				v := ma.variance()/float64(ma.n) + mb.variance()/float64(mb.n)
				if v > 0 && twoSidedNormalP((mb.mean-ma.mean)/math.Sqrt(v)) <= alpha {
					naiveHit = true
				}
			}
		}
		if seqHit {
			seqFP++
		}
		if naiveHit {
			naiveFP++
		}
	}
	return float64(seqFP) / float64(runs), float64(naiveFP) / float64(runs)
}

func TestSequentialAAKeepsAlpha(t *testing.T) {
	const alpha = 0.05
	for _, tc := range []struct {
		name       string
		proportion bool
		draw       func(*rand.Rand) float64
	}{
		{"normal", false, func(r *rand.Rand) float64 { return 100 + 15*r.NormFloat64() }},
		// Latency-like: skewed, heavy right tail.
		{"lognormal", false, func(r *rand.Rand) float64 { return math.Exp(r.NormFloat64() * 0.5) }},
		{"proportion", true, func(r *rand.Rand) float64 {
			if r.Float64() < 0.2 {
				return 1
			}
			return 0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, 13))
			seq, naive := aaRuns(1000, 500, alpha, tc.proportion, tc.draw, rng)
			t.Logf("false positives over 1000 A/A runs × 480 looks: sequential %.3f, naive peeking %.3f", seq, naive)
			if seq > alpha {
				t.Errorf("sequential false-positive rate %.3f > alpha %.2f", seq, alpha)
			}
			// The check must be able to fail: peeking at a fixed-horizon
			// test over the same looks breaks alpha by a wide margin.
			if naive <= 2*alpha {
				t.Errorf("naive peeking rate %.3f: the simulation is too weak to show anything", naive)
			}
		})
	}
}

func TestSequentialFindsRealDifference(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 19))
	detected, covered := 0, 0
	const runs = 200
	for run := 0; run < runs; run++ {
		s := NewSequential(SequentialConfig{Alpha: 0.05})
		var r SequentialResult
		for i := 0; i < 400; i++ {
			s.AddA(100 + 15*rng.NormFloat64())
			s.AddB(95 + 15*rng.NormFloat64()) // a third of a standard deviation faster
			r = s.Look()
		}
		if r.Rejected && r.Diff < 0 {
			detected++
		}
		if r.Bounded && r.Low <= -5 && -5 <= r.High {
			covered++
		}
	}
	if detected < runs*8/10 {
		t.Errorf("detected %d/%d, want most", detected, runs)
	}
	// A confidence sequence must cover the truth at all looks with
	// probability ≥ 95%, so at the last look at least that often.
	if covered < runs*95/100 {
		t.Errorf("confidence sequence covered the true effect in %d/%d runs", covered, runs)
	}
}

func TestSequentialEarlyLooks(t *testing.T) {
	s := NewSequential(SequentialConfig{})
	for i := 0; i < 5; i++ {
		s.AddA(1)
		s.AddB(100)
	}
	r := s.Look()
	if r.P != 1 || r.Bounded || r.Rejected || Decide(r.Comparison(), Rule{MinN: 50}) != InsufficientData {
		t.Errorf("a look before MinN must not judge: %+v", r)
	}
	s.AddA(math.NaN())
	if s.Look().NA != 5 {
		t.Error("NaN was counted")
	}
}
