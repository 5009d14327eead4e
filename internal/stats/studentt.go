package stats

import "math"

// StudentTSF is P(T > t) for Student's t with df degrees of freedom
// (df > 0), computed from the regularized incomplete beta function so that
// the upper tail keeps its relative precision.
func StudentTSF(t, df float64) float64 {
	switch {
	case math.IsNaN(t) || !(df > 0):
		return math.NaN()
	case math.IsInf(t, 1):
		return 0
	case math.IsInf(t, -1):
		return 1
	}
	tail := 0.5 * RegIncBeta(df/2, 0.5, df/(df+t*t)) // P(|T| > |t|) / 2
	if t > 0 {
		return tail
	}
	return 1 - tail
}

// StudentTQuantile is the t with P(T ≤ t) = p for Student's t with df
// degrees of freedom: −Inf at 0, +Inf at 1, NaN outside [0, 1].
//
// # Notes
//
// Bisection on StudentTSF in the upper half (the distribution is
// symmetric), to about 1e-12: the callers ask for a handful of quantiles
// per look, so speed does not matter and a bracket cannot diverge.
func StudentTQuantile(p, df float64) float64 {
	switch {
	case math.IsNaN(p) || p < 0 || p > 1 || !(df > 0):
		return math.NaN()
	case p == 0:
		return math.Inf(-1)
	case p == 1:
		return math.Inf(1)
	case p == 0.5:
		return 0
	case p < 0.5:
		return -StudentTQuantile(1-p, df)
	}
	q := 1 - p // upper tail wanted
	lo, hi := 0.0, 1.0
	for StudentTSF(hi, df) > q {
		lo, hi = hi, 2*hi
		if hi > 1e12 {
			return math.Inf(1)
		}
	}
	for range 200 {
		mid := (lo + hi) / 2
		if StudentTSF(mid, df) > q {
			lo = mid
		} else {
			hi = mid
		}
		if hi-lo <= 1e-12*hi {
			break
		}
	}
	return (lo + hi) / 2
}

// RegIncBeta is the regularized incomplete beta function I_x(a, b) for
// a, b > 0 and x in [0, 1].
//
// # Notes
//
// The continued fraction of Numerical Recipes (modified Lentz), applied to
// I_x(a, b) or to 1 − I_{1−x}(b, a), whichever converges fast.
func RegIncBeta(a, b, x float64) float64 {
	switch {
	case math.IsNaN(x) || !(a > 0) || !(b > 0) || x < 0 || x > 1:
		return math.NaN()
	case x == 0:
		return 0
	case x == 1:
		return 1
	}
	lab, _ := math.Lgamma(a + b)
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	front := math.Exp(lab - la - lb + a*math.Log(x) + b*math.Log1p(-x))
	if x < (a+1)/(a+b+2) {
		return front * betaContinuedFraction(a, b, x) / a
	}
	return 1 - front*betaContinuedFraction(b, a, 1-x)/b
}

func betaContinuedFraction(a, b, x float64) float64 {
	const tiny = 1e-300
	guard := func(v float64) float64 {
		if math.Abs(v) < tiny {
			return tiny
		}
		return v
	}
	c, d := 1.0, 1/guard(1-(a+b)*x/(a+1))
	h := d
	for m := 1; m <= 500; m++ {
		fm, m2 := float64(m), float64(2*m)
		num := fm * (b - fm) * x / ((a - 1 + m2) * (a + m2))
		d = 1 / guard(1+num*d)
		c = guard(1 + num/c)
		h *= d * c
		num = -(a + fm) * (a + b + fm) * x / ((a + m2) * (a + 1 + m2))
		d = 1 / guard(1+num*d)
		c = guard(1 + num/c)
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-15 {
			break
		}
	}
	return h
}
