package stats

import "math"

// NormalCDF is Φ(x), the standard normal distribution function.
func NormalCDF(x float64) float64 {
	// erfc keeps full relative precision in the lower tail, where 1+erf(x)
	// would cancel.
	return 0.5 * math.Erfc(-x/math.Sqrt2)
}

// NormalSF is 1 − Φ(x), computed without cancellation in the upper tail.
func NormalSF(x float64) float64 {
	return 0.5 * math.Erfc(x/math.Sqrt2)
}

// twoSidedNormalP is the two-sided p-value of a standard normal statistic.
func twoSidedNormalP(z float64) float64 {
	if math.IsNaN(z) {
		return 1
	}
	return math.Min(1, 2*NormalSF(math.Abs(z)))
}

// Coefficients of Acklam's rational approximation to the normal quantile
// (relative error below 1.15e-9 before refinement).
var (
	acklamA = [6]float64{-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00}
	acklamB = [5]float64{-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01}
	acklamC = [6]float64{-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00}
	acklamD = [4]float64{7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00}
)

// NormalQuantile is Φ⁻¹(p): the z with NormalCDF(z) = p. It returns −Inf at
// 0, +Inf at 1 and NaN outside [0, 1].
//
// # Notes
//
// Acklam's rational approximation followed by one Halley step against
// NormalCDF, which brings it to about full double precision.
func NormalQuantile(p float64) float64 {
	switch {
	case math.IsNaN(p) || p < 0 || p > 1:
		return math.NaN()
	case p == 0:
		return math.Inf(-1)
	case p == 1:
		return math.Inf(1)
	}
	const low = 0.02425
	var x float64
	switch {
	case p < low:
		q := math.Sqrt(-2 * math.Log(p))
		x = (((((acklamC[0]*q+acklamC[1])*q+acklamC[2])*q+acklamC[3])*q+acklamC[4])*q + acklamC[5]) /
			((((acklamD[0]*q+acklamD[1])*q+acklamD[2])*q+acklamD[3])*q + 1)
	case p <= 1-low:
		q := p - 0.5
		r := q * q
		x = (((((acklamA[0]*r+acklamA[1])*r+acklamA[2])*r+acklamA[3])*r+acklamA[4])*r + acklamA[5]) * q /
			(((((acklamB[0]*r+acklamB[1])*r+acklamB[2])*r+acklamB[3])*r+acklamB[4])*r + 1)
	default:
		q := math.Sqrt(-2 * math.Log1p(-p))
		x = -(((((acklamC[0]*q+acklamC[1])*q+acklamC[2])*q+acklamC[3])*q+acklamC[4])*q + acklamC[5]) /
			((((acklamD[0]*q+acklamD[1])*q+acklamD[2])*q+acklamD[3])*q + 1)
	}
	// Halley refinement. In the upper half the error is measured on the
	// upper tail so that p close to 1 does not lose its digits to 1−p.
	var e float64
	if p > 0.5 {
		e = (1 - p) - NormalSF(x) // = Φ(x) − p
	} else {
		e = NormalCDF(x) - p
	}
	u := e * math.Sqrt(2*math.Pi) * math.Exp(x*x/2)
	return x - u/(1+x*u/2)
}

// RegIncGammaP is the regularized lower incomplete gamma function
// P(a, x) = γ(a, x)/Γ(a), for a > 0 and x ≥ 0.
func RegIncGammaP(a, x float64) float64 {
	switch {
	case math.IsNaN(a) || math.IsNaN(x) || a <= 0 || x < 0:
		return math.NaN()
	case x == 0:
		return 0
	case math.IsInf(x, 1):
		return 1
	}
	if x < a+1 {
		return gammaSeries(a, x)
	}
	return 1 - gammaContinuedFraction(a, x)
}

// RegIncGammaQ is the regularized upper incomplete gamma function
// Q(a, x) = 1 − P(a, x), computed directly in the tail where 1 − P would
// cancel.
func RegIncGammaQ(a, x float64) float64 {
	switch {
	case math.IsNaN(a) || math.IsNaN(x) || a <= 0 || x < 0:
		return math.NaN()
	case x == 0:
		return 1
	case math.IsInf(x, 1):
		return 0
	}
	if x < a+1 {
		return 1 - gammaSeries(a, x)
	}
	return gammaContinuedFraction(a, x)
}

// gammaPrefix is x^a e^{−x} / Γ(a), in logs to survive large a and x.
func gammaPrefix(a, x float64) float64 {
	lg, _ := math.Lgamma(a)
	return math.Exp(a*math.Log(x) - x - lg)
}

// gammaSeries sums P(a, x) = x^a e^{−x}/Γ(a+1) · Σ xⁿ/((a+1)…(a+n)), which
// converges fast for x < a+1.
func gammaSeries(a, x float64) float64 {
	term := 1 / a
	sum := term
	for n := 1; n < 10000; n++ {
		term *= x / (a + float64(n))
		sum += term
		if math.Abs(term) < math.Abs(sum)*1e-16 {
			break
		}
	}
	return math.Min(1, sum*gammaPrefix(a, x))
}

// gammaContinuedFraction evaluates Q(a, x) by its continued fraction
// (modified Lentz), which converges fast for x ≥ a+1.
func gammaContinuedFraction(a, x float64) float64 {
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 10000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		h *= delta
		if math.Abs(delta-1) < 1e-16 {
			break
		}
	}
	return math.Max(0, math.Min(1, h*gammaPrefix(a, x)))
}

// ChiSquaredSF is the upper tail P(X ≥ x) of a chi-squared distribution with
// df degrees of freedom.
func ChiSquaredSF(x float64, df int) float64 {
	if df <= 0 {
		return math.NaN()
	}
	if x <= 0 {
		return 1
	}
	return RegIncGammaQ(float64(df)/2, x/2)
}
