package experiment

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/stats"
)

// TestAutoSeqHoldsAlphaOnCorrelatedSeries runs the windowed test on null
// series (no effect) as persistent as a queue that remembers a burst:
// AR(1) with ρ up to 0.9, and a regime-switching series whose scale jumps
// ×3 for stretches (bursts), at the horizons of a 2 h and a 5 h canary of
// one-minute windows, looking after every term. Each must reject in at
// most alpha of the series. The same series under the iid variance (what
// the first test, and a mixture SPRT with a plain variance, amounted to)
// must reject far more often at ρ ≥ 0.8, or this check could not catch a
// test that ignores autocorrelation.
func TestAutoSeqHoldsAlphaOnCorrelatedSeries(t *testing.T) {
	const series, alpha = 1500, 0.05
	type gen func(rng *rand.Rand, d []float64)
	ar1 := func(rho float64) gen {
		return func(rng *rand.Rand, d []float64) {
			x := rng.NormFloat64()
			for i := range d {
				x = rho*x + math.Sqrt(1-rho*rho)*rng.NormFloat64()
				d[i] = x
			}
		}
	}
	bursty := func(rng *rand.Rand, d []float64) {
		x, scale := rng.NormFloat64(), 1.0
		for i := range d {
			if rng.Float64() < 0.1 {
				scale = 4 - scale // 1 ↔ 3
			}
			x = 0.7*x + math.Sqrt(1-0.49)*rng.NormFloat64()
			d[i] = scale * x
		}
	}
	for _, tc := range []struct {
		name    string
		gen     gen
		iidMore bool // the iid test must reject several times as often
	}{
		{"iid", ar1(0), false},
		{"ar1-0.5", ar1(0.5), false},
		{"ar1-0.8", ar1(0.8), true},
		{"ar1-0.9", ar1(0.9), true},
		{"bursty", bursty, true},
	} {
		for _, horizon := range []int{120, 300} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, horizon), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(horizon), 2))
				var rej, naiveRej int
				d := make([]float64, horizon)
				for range series {
					tc.gen(rng, d)
					s := newAutoSeq(alpha, horizon)
					naive := stats.NewSequential(stats.SequentialConfig{Alpha: alpha, MixtureSD: 0.5, MinN: firstLook})
					rejected, naiveRejected := false, false
					for i := 1; i <= horizon; i++ {
						if r := s.look(d[:i], 0); r.Bounded && (r.Low > 0 || r.High < 0) {
							rejected = true
						}
						naive.AddB(d[i-1])
						naive.AddA(0)
						naiveRejected = naiveRejected || naive.Look().Rejected
					}
					if rejected {
						rej++
					}
					if naiveRejected {
						naiveRej++
					}
				}
				rate, lo, hi := wilson(rej, series)
				nr := float64(naiveRej) / series
				t.Logf("false rejections: %.3f [%.3f, %.3f] (iid variance: %.3f), alpha %.2f", rate, lo, hi, nr, alpha)
				if rate > alpha {
					t.Errorf("rejects %.3f [%.3f, %.3f] of null series, want at most alpha %.2f", rate, lo, hi, alpha)
				}
				if tc.iidMore && nr < 3*alpha {
					t.Errorf("the iid test rejects only %.3f: the check would not catch a test that ignores autocorrelation", nr)
				}
			})
		}
	}
}

// TestAutoSeqDetects is the other half: a shift of 1.5 standard
// deviations of the terms on an AR(1) series with ρ = 0.5 (an effective
// length of a third of the series) is found in most series by the
// horizon, at the per-metric alpha of a canary, and its sign is right.
func TestAutoSeqDetects(t *testing.T) {
	const series, horizon, alpha, rho, shift = 400, 120, 0.005, 0.5, 1.5
	rng := rand.New(rand.NewPCG(3, 4))
	var found int
	d := make([]float64, horizon)
	for range series {
		x := rng.NormFloat64()
		for i := range d {
			x = rho*x + math.Sqrt(1-rho*rho)*rng.NormFloat64()
			d[i] = x + shift
		}
		s := newAutoSeq(alpha, horizon)
		var r seqLook
		for i := 1; i <= horizon; i++ {
			r = s.look(d[:i], 0)
		}
		if r.Bounded && r.Low > 0 {
			found++
		}
		if r.Bounded && r.High < 0 {
			t.Fatalf("a positive shift judged negative: %+v", r)
		}
	}
	if rate := float64(found) / series; rate < 0.9 {
		t.Errorf("found a shift of %.1f sd in %.2f of series, want at least 0.9", shift, rate)
	}
}

// wilson is x/n with its Wilson 95% interval.
func wilson(x, n int) (p, lo, hi float64) {
	const z = 1.959964
	p, nn := float64(x)/float64(n), float64(n)
	d := 1 + z*z/nn
	c := (p + z*z/(2*nn)) / d
	h := z * math.Sqrt(p*(1-p)/nn+z*z/(4*nn*nn)) / d
	return p, max(c-h, 0), min(c+h, 1)
}

// TestPairedSeriesWindows checks that windows close in order, that a
// window with one arm only is not paired, and that late observations only
// count in the totals.
func TestPairedSeriesWindows(t *testing.T) {
	p := newPairedSeries(epoch, time.Minute, 0)
	p.add(Baseline, 0, 1)
	p.add(Candidate, 0, 3)
	p.add(Baseline, 1, 5) // no partner: not paired
	p.add(Baseline, 2, 2)
	p.add(Candidate, 2, 2)
	p.close(epoch.Add(150 * time.Second)) // closes windows 0 and 1
	p.add(Candidate, 0, 100)              // late
	p.close(epoch.Add(3 * time.Minute))
	if len(p.diffs) != 2 || p.diffs[0] != 2 || p.diffs[1] != 0 {
		t.Errorf("diffs %v, want [2 0]", p.diffs)
	}
	if p.n != [2]int{3, 3} || p.baseMean() != 1.5 {
		t.Errorf("counts %v, base mean %v; want [3 3], 1.5", p.n, p.baseMean())
	}
}
