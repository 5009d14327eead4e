package stats

import "math"

// ProportionResult is the outcome of a two-proportion z-test of baseline
// x1/n1 against candidate x2/n2.
type ProportionResult struct {
	NA, NB int
	PA, PB float64
	// Diff is PB − PA.
	Diff float64
	// Z is the pooled-variance statistic, positive when PB > PA.
	Z float64
	// P is the two-sided p-value (the same as R's prop.test(correct=FALSE)).
	P float64
	// Low and High are Newcombe's hybrid score interval for Diff (his method
	// 10), which keeps its coverage near 0 and 1 where Wald's does not.
	Low, High float64
	// WaldLow and WaldHigh are the textbook Wald interval, for reference.
	WaldLow, WaldHigh float64
	Confidence        float64
}

// Comparison returns the result in the shape Decide judges.
func (r ProportionResult) Comparison() Comparison {
	return Comparison{NA: r.NA, NB: r.NB, Effect: r.Diff, Low: r.Low, High: r.High, P: r.P}
}

// TwoProportion tests baseline x1 successes in n1 trials against candidate x2
// in n2, with 95% intervals. See TwoProportionCI.
func TwoProportion(x1, n1, x2, n2 int) ProportionResult {
	return TwoProportionCI(x1, n1, x2, n2, 0.95)
}

// TwoProportionCI is TwoProportion at confidence conf (0.95 if conf is not in
// (0, 1)). Counts that make no sense (n ≤ 0, x < 0, x > n) give a result with
// NA = NB = 0 and P = 1, which Decide reads as InsufficientData.
func TwoProportionCI(x1, n1, x2, n2 int, conf float64) ProportionResult {
	if !(conf > 0 && conf < 1) {
		conf = 0.95
	}
	r := ProportionResult{P: 1, Confidence: conf}
	if n1 <= 0 || n2 <= 0 || x1 < 0 || x2 < 0 || x1 > n1 || x2 > n2 {
		return r
	}
	r.NA, r.NB = n1, n2
	fn1, fn2 := float64(n1), float64(n2)
	r.PA, r.PB = float64(x1)/fn1, float64(x2)/fn2
	r.Diff = r.PB - r.PA
	pooled := float64(x1+x2) / (fn1 + fn2)
	if se := math.Sqrt(pooled * (1 - pooled) * (1/fn1 + 1/fn2)); se > 0 {
		r.Z = r.Diff / se
		r.P = twoSidedNormalP(r.Z)
	}
	z := NormalQuantile(1 - (1-conf)/2)
	wald := z * math.Sqrt(r.PA*(1-r.PA)/fn1+r.PB*(1-r.PB)/fn2)
	r.WaldLow, r.WaldHigh = r.Diff-wald, r.Diff+wald
	la, ua := wilson(r.PA, fn1, z)
	lb, ub := wilson(r.PB, fn2, z)
	r.Low = r.Diff - math.Sqrt((r.PB-lb)*(r.PB-lb)+(ua-r.PA)*(ua-r.PA))
	r.High = r.Diff + math.Sqrt((ub-r.PB)*(ub-r.PB)+(r.PA-la)*(r.PA-la))
	return r
}

// wilson is the Wilson score interval for a proportion p observed in n
// trials, at the normal quantile z.
func wilson(p, n, z float64) (low, high float64) {
	z2 := z * z
	den := 1 + z2/n
	center := (p + z2/(2*n)) / den
	half := z / den * math.Sqrt(p*(1-p)/n+z2/(4*n*n))
	return math.Max(0, center-half), math.Min(1, center+half)
}
