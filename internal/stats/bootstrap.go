package stats

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Interval is a point estimate with a confidence interval.
type Interval struct {
	Estimate   float64
	Low, High  float64
	Confidence float64
}

// DefaultBootstrapIters is the number of resamples when a caller passes 0.
const DefaultBootstrapIters = 2000

// Bootstrap returns stat(samples) with a percentile bootstrap interval at
// confidence conf (0.95 if not in (0, 1)), from iters resamples (2000 if
// iters ≤ 0) drawn with rng.
//
// Use it where the unit of analysis is a window, not a job: in a switchback
// experiment the samples are per-window values (say each window's p95), so
// the interval respects the correlation between jobs inside one window.
//
// rng is the only source of randomness, so the same seed gives the same
// interval. A nil rng means a fixed seed, never the global source. With no
// samples the interval is all zeros.
func Bootstrap(samples []float64, stat func([]float64) float64, iters int, conf float64, rng *rand.Rand) Interval {
	iters, conf, rng = bootstrapDefaults(iters, conf, rng)
	iv := Interval{Confidence: conf}
	if len(samples) == 0 {
		return iv
	}
	iv.Estimate = stat(samples)
	buf := make([]float64, len(samples))
	dist := make([]float64, iters)
	for i := range dist {
		resample(buf, samples, rng)
		dist[i] = stat(buf)
	}
	iv.Low, iv.High = percentileInterval(dist, conf)
	return iv
}

// BootstrapDiff bootstraps stat(b) − stat(a), resampling baseline a and
// candidate b independently (for example the per-window p95 of the windows
// each arm held in a switchback). Defaults are Bootstrap's. With an empty
// arm the interval is all zeros.
func BootstrapDiff(a, b []float64, stat func([]float64) float64, iters int, conf float64, rng *rand.Rand) Interval {
	iters, conf, rng = bootstrapDefaults(iters, conf, rng)
	iv := Interval{Confidence: conf}
	if len(a) == 0 || len(b) == 0 {
		return iv
	}
	iv.Estimate = stat(b) - stat(a)
	bufA, bufB := make([]float64, len(a)), make([]float64, len(b))
	dist := make([]float64, iters)
	for i := range dist {
		resample(bufA, a, rng)
		resample(bufB, b, rng)
		dist[i] = stat(bufB) - stat(bufA)
	}
	iv.Low, iv.High = percentileInterval(dist, conf)
	return iv
}

func bootstrapDefaults(iters int, conf float64, rng *rand.Rand) (int, float64, *rand.Rand) {
	if iters <= 0 {
		iters = DefaultBootstrapIters
	}
	if !(conf > 0 && conf < 1) {
		conf = 0.95
	}
	if rng == nil {
		rng = rand.New(rand.NewPCG(1, 2))
	}
	return iters, conf, rng
}

func resample(dst, src []float64, rng *rand.Rand) {
	for i := range dst {
		dst[i] = src[rng.IntN(len(src))]
	}
}

// percentileInterval sorts dist in place and returns its α/2 and 1−α/2
// quantiles. NaN statistics (a stat undefined on some resample) are dropped.
func percentileInterval(dist []float64, conf float64) (low, high float64) {
	kept := dist[:0]
	for _, d := range dist {
		if !math.IsNaN(d) {
			kept = append(kept, d)
		}
	}
	if len(kept) == 0 {
		return 0, 0
	}
	sort.Float64s(kept)
	alpha := 1 - conf
	return quantileSorted(kept, alpha/2), quantileSorted(kept, 1-alpha/2)
}

// Quantile returns the q-quantile of xs (0 ≤ q ≤ 1) by linear interpolation
// between order statistics (Hyndman–Fan type 7, the default of R and numpy).
// It does not modify xs. With no values it returns 0.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return quantileSorted(s, q)
}

func quantileSorted(s []float64, q float64) float64 {
	q = math.Max(0, math.Min(1, q))
	h := q * float64(len(s)-1)
	lo := int(math.Floor(h))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}

// Mean returns the arithmetic mean of xs, or 0 with no values.
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// Median returns the median of xs, or 0 with no values.
func Median(xs []float64) float64 { return Quantile(xs, 0.5) }
