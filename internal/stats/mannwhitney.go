package stats

import (
	"math"
	"sort"
)

// MannWhitneyResult is the outcome of a Mann–Whitney U (Wilcoxon rank-sum)
// test of baseline a against candidate b.
type MannWhitneyResult struct {
	NA, NB int
	// U is the candidate's statistic: the number of pairs with b > a, plus
	// half the ties. NA·NB/2 means no shift; larger means b tends larger.
	U float64
	// Z is the tie- and continuity-corrected normal statistic, positive when
	// b tends larger (it is also reported when the p-value is exact).
	Z float64
	// P is the two-sided p-value.
	P float64
	// Exact is true when P and the interval come from the exact null
	// distribution (both arms under 50 observations and no ties).
	Exact bool
	// HodgesLehmann is the shift estimate: the median of all pairwise
	// differences b_j − a_i. For latencies, negative means the candidate is
	// faster.
	HodgesLehmann float64
	// Low and High bound the shift at Confidence (Moses' distribution-free
	// interval on the sorted pairwise differences).
	Low, High  float64
	Confidence float64
}

// Comparison returns the result in the shape Decide judges.
func (r MannWhitneyResult) Comparison() Comparison {
	return Comparison{NA: r.NA, NB: r.NB, Effect: r.HodgesLehmann, Low: r.Low, High: r.High, P: r.P}
}

// MannWhitney tests whether candidate b is shifted against baseline a, with a
// 95% interval for the shift. See MannWhitneyCI.
func MannWhitney(a, b []float64) MannWhitneyResult {
	return MannWhitneyCI(a, b, 0.95)
}

// exactLimit is the arm size below which the exact distribution is used, as
// in R's wilcox.test.
const exactLimit = 50

// MannWhitneyCI tests whether candidate b is shifted against baseline a and
// bounds the Hodges–Lehmann shift (median of b − a) at confidence conf
// (0.95 if conf is not in (0, 1)).
//
// Non-finite values (NaN, ±Inf) are dropped: they are not latencies. With an
// empty arm the result has P = 1 and zero estimates; Decide reads it as
// InsufficientData.
//
// # Notes
//
// The p-value and the interval are exact when both arms have fewer than 50
// observations and there are no ties; otherwise they use the normal
// approximation with the tie-corrected variance and a continuity correction
// (R's wilcox.test(exact = FALSE, correct = TRUE) and scipy's
// mannwhitneyu(method="asymptotic")). The shift's order statistics are found
// by bisection over the pairwise differences without materialising them, so
// the cost is O((NA+NB)·log) after sorting, not O(NA·NB).
func MannWhitneyCI(a, b []float64, conf float64) MannWhitneyResult {
	return mannWhitney(a, b, conf, true)
}

// mannWhitney is MannWhitneyCI; allowExact=false forces the normal
// approximation (tests compare it with published asymptotic values).
func mannWhitney(a, b []float64, conf float64, allowExact bool) MannWhitneyResult {
	if !(conf > 0 && conf < 1) {
		conf = 0.95
	}
	a, b = finiteSorted(a), finiteSorted(b)
	r := MannWhitneyResult{NA: len(a), NB: len(b), P: 1, Confidence: conf}
	if len(a) == 0 || len(b) == 0 {
		return r
	}
	m, n := float64(len(b)), float64(len(a))
	rankSumB, ties := rankSum(a, b)
	r.U = rankSumB - m*(m+1)/2
	mean := m * n / 2
	total := m + n
	variance := m * n / 12 * ((total + 1) - ties/(total*(total-1)))
	if variance > 0 {
		d := r.U - mean
		switch {
		case d > 0:
			d = math.Max(0, d-0.5)
		case d < 0:
			d = math.Min(0, d+0.5)
		}
		r.Z = d / math.Sqrt(variance)
	}
	alpha := 1 - conf
	pairs := len(a) * len(b)
	var k int // the interval is the k-th and (pairs−k+1)-th smallest difference
	if allowExact && ties == 0 && len(a) < exactLimit && len(b) < exactLimit {
		r.Exact = true
		cdf := mannWhitneyCDF(len(b), len(a))
		u := int(math.Round(r.U))
		var p float64
		if r.U > mean {
			p = 1 - cdf[u-1]
		} else {
			p = cdf[u]
		}
		r.P = math.Min(1, 2*p)
		k = sort.Search(len(cdf), func(i int) bool { return cdf[i] >= alpha/2 })
		if k == 0 {
			k = 1
		}
	} else {
		if variance > 0 {
			r.P = twoSidedNormalP(r.Z)
		}
		c := mean - NormalQuantile(1-alpha/2)*math.Sqrt(variance)
		k = int(math.Floor(c + 0.5))
		if k < 1 {
			k = 1
		}
	}
	if k > (pairs+1)/2 {
		k = (pairs + 1) / 2
	}
	r.Low = kthDifference(a, b, k)
	r.High = kthDifference(a, b, pairs-k+1)
	if pairs%2 == 1 {
		r.HodgesLehmann = kthDifference(a, b, pairs/2+1)
	} else {
		r.HodgesLehmann = (kthDifference(a, b, pairs/2) + kthDifference(a, b, pairs/2+1)) / 2
	}
	return r
}

// finiteSorted returns a sorted copy of xs without NaN and infinities.
func finiteSorted(xs []float64) []float64 {
	out := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			out = append(out, x)
		}
	}
	sort.Float64s(out)
	return out
}

// rankSum returns the sum of b's mid-ranks in the pooled sample and the tie
// term Σ(t³ − t) over groups of tied values. a and b must be sorted.
func rankSum(a, b []float64) (sumB, ties float64) {
	i, j := 0, 0
	rank := 0 // ranks used so far
	for i < len(a) || j < len(b) {
		var v float64
		switch {
		case i == len(a):
			v = b[j]
		case j == len(b):
			v = a[i]
		default:
			v = math.Min(a[i], b[j])
		}
		ca, cb := 0, 0
		for i < len(a) && a[i] == v {
			i++
			ca++
		}
		for j < len(b) && b[j] == v {
			j++
			cb++
		}
		t := ca + cb
		// The group takes ranks rank+1 … rank+t; each gets their mean.
		mid := float64(rank) + float64(t+1)/2
		sumB += float64(cb) * mid
		if t > 1 {
			ft := float64(t)
			ties += ft*ft*ft - ft
		}
		rank += t
	}
	return sumB, ties
}

// mannWhitneyCDF returns P(U ≤ u) for u = 0 … m·n under the null, where U
// counts the pairs in which one of the m observations beats one of the n.
//
// It counts arrangements with the recursion on the largest observation:
// f(m, n, u) = f(m−1, n, u−n) + f(m, n−1, u) (the largest is one of the m
// and beats all n, or it is one of the n). Only additions of positive counts,
// so float64 keeps full relative precision even past 2⁵³.
func mannWhitneyCDF(m, n int) []float64 {
	// prev[j] is f(i−1, j, ·), cur[j] is f(i, j, ·).
	prev := make([][]float64, n+1)
	for j := range prev {
		prev[j] = []float64{1}
	}
	for i := 1; i <= m; i++ {
		cur := make([][]float64, n+1)
		cur[0] = []float64{1}
		for j := 1; j <= n; j++ {
			f := make([]float64, i*j+1)
			for u, c := range prev[j] { // largest is one of the m: adds j
				f[u+j] += c
			}
			for u, c := range cur[j-1] { // largest is one of the n
				f[u] += c
			}
			cur[j] = f
		}
		prev = cur
	}
	counts := prev[n]
	var total float64
	for _, c := range counts {
		total += c
	}
	cdf := make([]float64, len(counts))
	var run float64
	for u, c := range counts {
		run += c
		cdf[u] = run / total
	}
	return cdf
}

// orderedKey maps a float64 to a uint64 whose unsigned order is the float
// order, so that bisection over keys visits every representable value.
func orderedKey(f float64) uint64 {
	b := math.Float64bits(f)
	if b>>63 == 1 {
		return ^b
	}
	return b | 1<<63
}

func fromOrderedKey(k uint64) float64 {
	if k>>63 == 1 {
		return math.Float64frombits(k &^ (1 << 63))
	}
	return math.Float64frombits(^k)
}

// countAtMost counts pairs with b_j − a_i ≤ t. a and b are sorted, so as a_i
// grows the number of qualifying b_j only grows: one pass, O(len(a)+len(b)).
func countAtMost(a, b []float64, t float64) int {
	count, j := 0, 0
	for _, ai := range a {
		for j < len(b) && b[j]-ai <= t {
			j++
		}
		count += j
	}
	return count
}

// kthDifference returns the k-th smallest (1-based) of the pairwise
// differences b_j − a_i. It bisects over the ordered float keys between the
// smallest and largest difference: at most 64 counting passes, and the result
// is exactly one of the differences.
func kthDifference(a, b []float64, k int) float64 {
	lo := orderedKey(b[0] - a[len(a)-1])
	hi := orderedKey(b[len(b)-1] - a[0])
	for lo < hi {
		mid := lo + (hi-lo)/2
		if countAtMost(a, b, fromOrderedKey(mid)) >= k {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return fromOrderedKey(lo)
}
