package stats

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkMannWhitney is a canary look at two arms of 10,000 latencies:
// the Hodges–Lehmann shift and its interval come from bisection over the
// pairwise differences, not from materialising 10⁸ of them.
func BenchmarkMannWhitney(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	a, c := make([]float64, 10000), make([]float64, 10000)
	for i := range a {
		a[i] = rng.ExpFloat64() * 3
		c[i] = rng.ExpFloat64()*3 + 0.2
	}
	b.ReportAllocs()
	for b.Loop() {
		MannWhitney(a, c)
	}
}

// BenchmarkSequentialLook is one look of the always-valid test.
func BenchmarkSequentialLook(b *testing.B) {
	s := NewSequential(SequentialConfig{})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1000; i++ {
		s.AddA(rng.NormFloat64())
		s.AddB(rng.NormFloat64())
	}
	for b.Loop() {
		s.AddA(rng.NormFloat64())
		s.Look()
	}
}
