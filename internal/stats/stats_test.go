package stats

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

func near(t *testing.T, name string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol || math.IsNaN(got) {
		t.Errorf("%s = %.15g; want %.15g (±%g)", name, got, want, tol)
	}
}

func TestNormal(t *testing.T) {
	// Reference values: R's pnorm/qnorm (identical to scipy.stats.norm).
	for _, tc := range []struct {
		x, cdf float64
	}{
		{0, 0.5},
		{1.96, 0.9750021048517795},
		{-3, 0.0013498980316300946},
		{-8, 6.220960574271785e-16},
	} {
		near(t, "NormalCDF", NormalCDF(tc.x), tc.cdf, 1e-15+1e-12*tc.cdf)
		near(t, "NormalSF", NormalSF(-tc.x), tc.cdf, 1e-15+1e-12*tc.cdf)
	}
	for _, tc := range []struct {
		p, z float64
	}{
		{0.5, 0},
		{0.975, 1.959963984540054},
		{0.99, 2.3263478740408408},
		{0.001, -3.090232306167813},
		{1e-10, -6.361340902404056},
		{0.999999, 4.753424308822899}, // upper tail
	} {
		near(t, "NormalQuantile", NormalQuantile(tc.p), tc.z, 1e-9)
	}
	// Round trip over the whole range, where Acklam's approximation alone
	// would be off by ~1e-9.
	for p := 1e-12; p < 1; p *= 1.7 {
		if got := NormalCDF(NormalQuantile(p)); math.Abs(got-p) > 1e-13*math.Max(p, 1e-3) {
			t.Errorf("Φ(Φ⁻¹(%g)) = %g", p, got)
		}
	}
	if !math.IsInf(NormalQuantile(0), -1) || !math.IsInf(NormalQuantile(1), 1) || !math.IsNaN(NormalQuantile(2)) {
		t.Error("NormalQuantile edges")
	}
}

func TestIncompleteGamma(t *testing.T) {
	for _, x := range []float64{0.01, 0.5, 1, 3, 10, 40} {
		// Closed forms: P(1, x) = 1 − e^{−x}; P(½, x) = erf(√x).
		near(t, "P(1,x)", RegIncGammaP(1, x), -math.Expm1(-x), 1e-14)
		near(t, "P(0.5,x)", RegIncGammaP(0.5, x), math.Erf(math.Sqrt(x)), 1e-14)
		near(t, "Q(0.5,x)", RegIncGammaQ(0.5, x), math.Erfc(math.Sqrt(x)), 1e-14*math.Max(1, math.Erfc(math.Sqrt(x))*1e3))
	}
	// Integer a: Q(a, x) = e^{−x} Σ_{k<a} x^k/k! (the Poisson tail), an
	// independent formula, here with a = 50 (chi-squared with 100 df).
	for _, x := range []float64{20, 49, 50, 51, 80} {
		var sum float64
		for k := 0; k < 50; k++ {
			lg, _ := math.Lgamma(float64(k + 1))
			sum += math.Exp(float64(k)*math.Log(x) - x - lg)
		}
		near(t, "Q(50,x)", RegIncGammaQ(50, x), sum, 1e-12)
		near(t, "P+Q", RegIncGammaP(50, x)+RegIncGammaQ(50, x), 1, 1e-13)
	}
}

func TestChiSquaredSF(t *testing.T) {
	for _, tc := range []struct {
		x    float64
		df   int
		want float64
	}{
		{4, 1, 0.045500263896358396}, // = erfc(√2)
		{3.841458820694124, 1, 0.05}, // qchisq(0.95, 1)
		{18.307038053275146, 10, 0.05},
		{10, 2, math.Exp(-5)},              // df 2: e^{−x/2}
		{7, 4, math.Exp(-3.5) * (1 + 3.5)}, // df 4: e^{−x/2}(1 + x/2)
		{0, 3, 1},
	} {
		near(t, "ChiSquaredSF", ChiSquaredSF(tc.x, tc.df), tc.want, 1e-12)
	}
}

func TestMannWhitneyExact(t *testing.T) {
	// scipy.stats.mannwhitneyu documentation: males vs females,
	// statistic 17.0, exact p 0.1111111111111111 (= 14/126).
	males := []float64{19, 22, 16, 29, 24}
	females := []float64{20, 11, 17, 12}
	r := MannWhitney(females, males)
	if !r.Exact || r.U != 17 || r.NA != 4 || r.NB != 5 {
		t.Fatalf("got %+v", r)
	}
	near(t, "P", r.P, 14.0/126, 1e-15)
	// The same data with the normal approximation: scipy's
	// method="asymptotic" gives 0.11134688653314041.
	ra := mannWhitney(females, males, 0.95, false)
	near(t, "asymptotic P", ra.P, 0.11134688653314041, 1e-12)
	near(t, "Z", ra.Z, 1.5921683328090657, 1e-12)

	// R: wilcox.test(6:10, 1:5, conf.int = TRUE): W = 25, p = 0.007937
	// (= 2/252), estimate 5, 95% interval [2, 8].
	a := []float64{1, 2, 3, 4, 5}
	b := []float64{6, 7, 8, 9, 10}
	r = MannWhitney(a, b)
	if r.U != 25 || r.HodgesLehmann != 5 || r.Low != 2 || r.High != 8 {
		t.Errorf("got %+v", r)
	}
	near(t, "P", r.P, 2.0/252, 1e-15)
	// Swapping the arms flips the statistic and the shift, not the p.
	s := MannWhitney(b, a)
	if s.U != 0 || s.HodgesLehmann != -5 || s.Low != -8 || s.High != -2 || math.Abs(s.P-r.P) > 1e-15 || s.Z != -r.Z {
		t.Errorf("swapped: got %+v", s)
	}
}

func TestMannWhitneyTies(t *testing.T) {
	// Hand-computed (the arithmetic is in the comment so it can be checked):
	// pooled 1a 2a 2a 2b 3a 3b 4b 4b 5b; mid-ranks 1, 3,3,3, 5.5,5.5,
	// 7.5,7.5, 9; b's rank sum 32.5, U = 32.5 − 15 = 17.5; tie term
	// (27−3)+(8−2)+(8−2) = 36; var = 20/12·(10 − 36/72) = 15.8333;
	// z = (7.5 − 0.5)/√15.8333 = 1.759186414825121; p = 0.0785458509511907.
	// R: wilcox.test(c(2,3,4,4,5), c(1,2,2,3), exact=FALSE) agrees.
	r := MannWhitney([]float64{1, 2, 2, 3}, []float64{2, 3, 4, 4, 5})
	if r.Exact || r.U != 17.5 {
		t.Fatalf("got %+v", r)
	}
	near(t, "Z", r.Z, 1.759186414825121, 1e-12)
	near(t, "P", r.P, 0.0785458509511907, 1e-12)
	// All values equal: no evidence either way.
	r = MannWhitney([]float64{3, 3, 3}, []float64{3, 3})
	if r.P != 1 || r.HodgesLehmann != 0 {
		t.Errorf("all tied: %+v", r)
	}
	// Empty and non-finite input.
	r = MannWhitney(nil, []float64{1, math.NaN()})
	if r.P != 1 || r.NA != 0 || r.NB != 1 || Decide(r.Comparison(), Rule{}) != InsufficientData {
		t.Errorf("empty: %+v", r)
	}
}

func TestMannWhitneyCDF(t *testing.T) {
	// m = 4, n = 5: 126 arrangements; u = 0…3 has 1, 1, 2, 3 of them (the
	// partitions of u into at most 4 parts no larger than 5).
	cdf := mannWhitneyCDF(4, 5)
	if len(cdf) != 21 {
		t.Fatalf("len %d", len(cdf))
	}
	near(t, "P(U≤3)", cdf[3], 7.0/126, 1e-15)
	near(t, "P(U≤20)", cdf[20], 1, 1e-15)
	// Symmetry P(U ≤ u) = P(U ≥ mn − u) at a size where counts pass 2⁵³.
	cdf = mannWhitneyCDF(49, 49)
	mn := 49 * 49
	for _, u := range []int{100, 900, 1200} {
		near(t, "symmetry", cdf[u], 1-cdf[mn-u-1], 1e-12)
	}
}

func TestKthDifference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 50; trial++ {
		a := make([]float64, 1+rng.IntN(12))
		b := make([]float64, 1+rng.IntN(12))
		for i := range a {
			a[i] = float64(rng.IntN(6)) - 2.5 // ties and negatives on purpose
		}
		for i := range b {
			b[i] = rng.NormFloat64()
		}
		var all []float64
		for _, x := range a {
			for _, y := range b {
				all = append(all, y-x)
			}
		}
		sort.Float64s(all)
		sa, sb := finiteSorted(a), finiteSorted(b)
		for k := 1; k <= len(all); k++ {
			if got := kthDifference(sa, sb, k); got != all[k-1] {
				t.Fatalf("trial %d k=%d: got %v want %v", trial, k, got, all[k-1])
			}
		}
	}
}

func TestMannWhitneyCoverage(t *testing.T) {
	// The 95% interval for the shift should cover the true shift about 95%
	// of the time, on the exact path (n = 20) and the approximate (n = 80).
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{20, 80} {
		covered, runs := 0, 400
		for i := 0; i < runs; i++ {
			a, b := make([]float64, n), make([]float64, n)
			for j := range a {
				a[j] = rng.ExpFloat64()
				b[j] = rng.ExpFloat64() + 0.5
			}
			r := MannWhitney(a, b)
			if r.Low <= 0.5 && 0.5 <= r.High {
				covered++
			}
		}
		if c := float64(covered) / float64(runs); c < 0.92 || c > 0.985 {
			t.Errorf("n=%d: coverage %.3f, want ≈0.95", n, c)
		}
	}
}

func TestTwoProportion(t *testing.T) {
	// Newcombe (1998), Statistics in Medicine 17:873, example (a):
	// 56/70 − 48/80 = 0.2; Wald 0.0575 to 0.3425; score (method 10)
	// 0.0524 to 0.3339. Here the baseline is 48/80, so Diff = +0.2.
	r := TwoProportion(48, 80, 56, 70)
	near(t, "Diff", r.Diff, 0.2, 1e-15)
	near(t, "Low", r.Low, 0.0524, 5e-5)
	near(t, "High", r.High, 0.3339, 5e-5)
	near(t, "WaldLow", r.WaldLow, 0.0575, 5e-5)
	near(t, "WaldHigh", r.WaldHigh, 0.3425, 5e-5)
	// Pooled z by hand: p̄ = 104/150, se = √(p̄(1−p̄)(1/80+1/70)),
	// z = 0.2/se = 2.6501719512585327; R prop.test(correct=FALSE) gives
	// X-squared = z² = 7.0234 and p = 0.008045.
	near(t, "Z", r.Z, 2.6501719512585327, 1e-12)
	near(t, "P", r.P, 0.00804508136819659, 1e-12)
	// Degenerate and invalid input.
	if r := TwoProportion(0, 10, 0, 10); r.P != 1 || r.Diff != 0 || r.Low > 0 || r.High < 0 {
		t.Errorf("zeros: %+v", r)
	}
	if r := TwoProportion(5, 3, 1, 2); r.NA != 0 || r.P != 1 {
		t.Errorf("invalid: %+v", r)
	}
}

func TestQuantile(t *testing.T) {
	// R: quantile(c(1,2,3,4), c(0, .25, .5, .9, 1)) → 1, 1.75, 2.5, 3.7, 4.
	xs := []float64{4, 1, 3, 2}
	for _, tc := range [][2]float64{{0, 1}, {0.25, 1.75}, {0.5, 2.5}, {0.9, 3.7}, {1, 4}} {
		near(t, "Quantile", Quantile(xs, tc[0]), tc[1], 1e-15)
	}
	if xs[0] != 4 {
		t.Error("Quantile sorted its input")
	}
}

func TestBootstrap(t *testing.T) {
	// Same seed, same interval: a decision can be replayed.
	xs := []float64{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5}
	i1 := Bootstrap(xs, Mean, 500, 0.9, rand.New(rand.NewPCG(3, 4)))
	i2 := Bootstrap(xs, Mean, 500, 0.9, rand.New(rand.NewPCG(3, 4)))
	if i1 != i2 {
		t.Errorf("not deterministic: %+v vs %+v", i1, i2)
	}
	if !(i1.Low < i1.Estimate && i1.Estimate < i1.High) {
		t.Errorf("interval %+v does not bracket its estimate", i1)
	}
	if c := Bootstrap([]float64{7, 7, 7}, Median, 100, 0.95, nil); c.Low != 7 || c.High != 7 {
		t.Errorf("constant: %+v", c)
	}
	// Coverage of the mean of N(10, 1) with n = 40: about 95%.
	rng := rand.New(rand.NewPCG(5, 6))
	covered := 0
	for run := 0; run < 200; run++ {
		s := make([]float64, 40)
		for i := range s {
			s[i] = 10 + rng.NormFloat64()
		}
		if iv := Bootstrap(s, Mean, 1000, 0.95, rng); iv.Low <= 10 && 10 <= iv.High {
			covered++
		}
	}
	if covered < 176 || covered > 198 {
		t.Errorf("coverage %d/200, want ≈190", covered)
	}
	// A difference of 2 between arms of 12 windows each is found.
	a, b := make([]float64, 12), make([]float64, 12)
	for i := range a {
		a[i] = 10 + rng.NormFloat64()
		b[i] = 12 + rng.NormFloat64()
	}
	d := BootstrapDiff(a, b, Mean, 2000, 0.95, rng)
	if d.Low <= 0 || d.Low > 2 || d.High < 2 {
		t.Errorf("diff interval %+v should exclude 0 and contain 2", d)
	}
}

func TestSRM(t *testing.T) {
	for _, tc := range []struct {
		obs     []int
		shares  []float64
		chi2, p float64
	}{
		{[]int{5100, 4900}, []float64{1, 1}, 4, 0.045500263896358396},
		{[]int{50, 50, 50}, []float64{1, 1, 1}, 0, 1},
		// Expected 125, 125, 250: (25²+25²)/125 = 10; df 2: p = e^{−5}.
		{[]int{100, 150, 250}, []float64{0.25, 0.25, 0.5}, 10, math.Exp(-5)},
		{[]int{1, 2}, []float64{1}, 0, 1},
		{[]int{0, 0}, []float64{1, 1}, 0, 1},
		{[]int{3, 4}, []float64{1, 0}, 0, 1},
	} {
		chi2, p := SRM(tc.obs, tc.shares)
		near(t, "chi2", chi2, tc.chi2, 1e-12)
		near(t, "p", p, tc.p, 1e-12)
	}
}

func TestDecide(t *testing.T) {
	lat := Rule{MinN: 50, Alpha: 0.02, LowerIsBetter: true}
	for _, tc := range []struct {
		name string
		c    Comparison
		r    Rule
		want Verdict
	}{
		{"too few", Comparison{NA: 49, NB: 100, Effect: -5, P: 1e-9}, lat, InsufficientData},
		{"nan p", Comparison{NA: 60, NB: 60, Effect: -5, P: math.NaN()}, lat, InsufficientData},
		{"faster", Comparison{NA: 60, NB: 60, Effect: -5, P: 0.001}, lat, Better},
		{"slower", Comparison{NA: 60, NB: 60, Effect: 5, P: 0.001}, lat, Worse},
		{"not significant", Comparison{NA: 60, NB: 60, Effect: -5, P: 0.03}, lat, NoDifference},
		{"higher hit ratio", Comparison{NA: 60, NB: 60, Effect: 0.1, P: 0.001}, Rule{MinN: 50, Alpha: 0.02}, Better},
		{"too small to matter", Comparison{NA: 60, NB: 60, Effect: 0.1, P: 0.001}, Rule{MinN: 50, Alpha: 0.02, MinEffect: 0.5}, NoDifference},
		{"defaults", Comparison{NA: 10, NB: 10, Effect: 1, P: 0}, Rule{}, InsufficientData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.c, tc.r); got != tc.want {
				t.Errorf("got %v want %v", got, tc.want)
			}
		})
	}
	var zero Verdict
	if zero != InsufficientData || zero.Conclusive() {
		t.Error("the zero Verdict must be InsufficientData and never a pass")
	}
	b, _ := Worse.MarshalText()
	var v Verdict
	if err := v.UnmarshalText(b); err != nil || v != Worse || string(b) != "worse" {
		t.Errorf("text round trip: %s %v %v", b, v, err)
	}
}
