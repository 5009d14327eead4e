package stats

import (
	"math"
	"testing"
)

// TestStudentT checks quantiles against tables (R's qt) and the tail
// against closed forms: df = 1 is Cauchy, df = 2 has
// P(T > t) = (1 − t/√(t²+2))/2.
func TestStudentT(t *testing.T) {
	for _, tc := range []struct {
		p, df, want float64
	}{
		{0.975, 9, 2.2621571627},  // qt(0.975, 9)
		{0.995, 4, 4.6040948713},  // qt(0.995, 4)
		{0.999, 19, 3.5794001490}, // qt(0.999, 19)
		{0.025, 9, -2.2621571627},
		{0.9995, 9, 4.7809125637}, // qt(0.9995, 9)
		{0.975, 1e6, 1.9599663},   // ≈ normal
	} {
		if got := StudentTQuantile(tc.p, tc.df); math.Abs(got-tc.want) > 1e-6*math.Abs(tc.want) {
			t.Errorf("StudentTQuantile(%v, %v) = %.10f, want %.10f", tc.p, tc.df, got, tc.want)
		}
	}
	for _, x := range []float64{-3, -0.5, 0, 0.7, 2, 10, 300} {
		if got, want := StudentTSF(x, 1), 0.5-math.Atan(x)/math.Pi; math.Abs(got-want) > 1e-12 {
			t.Errorf("StudentTSF(%v, 1) = %v, want %v", x, got, want)
		}
		if got, want := StudentTSF(x, 2), (1-x/math.Sqrt(x*x+2))/2; math.Abs(got-want) > 1e-12*math.Max(want, 1e-3) {
			t.Errorf("StudentTSF(%v, 2) = %v, want %v", x, got, want)
		}
	}
}
