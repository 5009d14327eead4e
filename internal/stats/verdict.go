package stats

import (
	"fmt"
	"math"
)

// Comparison is what every two-arm test reports in one shape, so that a
// single rule can judge latencies, ratios and bootstrap intervals alike.
// Effect, Low and High are B − A (candidate minus baseline).
type Comparison struct {
	NA, NB int
	Effect float64
	Low    float64
	High   float64
	P      float64
}

// Verdict is the outcome of judging a comparison. Its zero value is
// InsufficientData, so a verdict nobody computed never reads as a pass.
type Verdict int

const (
	// InsufficientData: too few observations to judge. It is its own verdict
	// and never a pass: a canary step holds on it rather than advancing.
	InsufficientData Verdict = iota
	// NoDifference: enough data, and no difference at the chosen alpha.
	NoDifference
	// Better: the candidate is significantly better than the baseline.
	Better
	// Worse: the candidate is significantly worse than the baseline.
	Worse
)

var verdictNames = [...]string{"insufficient_data", "no_difference", "better", "worse"}

// String returns the verdict's snake_case name, as used in JSON reports.
func (v Verdict) String() string {
	if v < 0 || int(v) >= len(verdictNames) {
		return fmt.Sprintf("verdict(%d)", int(v))
	}
	return verdictNames[v]
}

// MarshalText writes the verdict's name, so JSON carries "worse", not 3.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText reads a verdict's name.
func (v *Verdict) UnmarshalText(b []byte) error {
	for i, n := range verdictNames {
		if n == string(b) {
			*v = Verdict(i)
			return nil
		}
	}
	return fmt.Errorf("stats: unknown verdict %q", b)
}

// Conclusive reports whether the verdict is Better or Worse.
func (v Verdict) Conclusive() bool { return v == Better || v == Worse }

// Rule says how to turn a Comparison into a Verdict.
type Rule struct {
	// MinN is the fewest observations each arm needs before any verdict but
	// InsufficientData (Kayenta's default is 50).
	MinN int
	// Alpha is the significance level (1 − confidence; 0.02 by default,
	// Kayenta's 98% confidence).
	Alpha float64
	// LowerIsBetter is true for latencies, errors and misses; false for hit
	// ratios and throughput.
	LowerIsBetter bool
	// MinEffect, if positive, is the smallest |effect| that counts: a
	// significant difference smaller than this is NoDifference (a practical
	// significance threshold, in the metric's units).
	MinEffect float64
}

// DefaultAlpha is the significance level used when a Rule leaves Alpha zero.
const DefaultAlpha = 0.02

// DefaultMinN is the per-arm sample size used when a Rule leaves MinN zero.
const DefaultMinN = 50

// Decide judges c by r. It returns InsufficientData when either arm has
// fewer than r.MinN observations or the p-value is undefined.
func Decide(c Comparison, r Rule) Verdict {
	minN, alpha := r.MinN, r.Alpha
	if minN <= 0 {
		minN = DefaultMinN
	}
	if alpha <= 0 || alpha >= 1 {
		alpha = DefaultAlpha
	}
	if c.NA < minN || c.NB < minN || math.IsNaN(c.P) || math.IsNaN(c.Effect) {
		return InsufficientData
	}
	if c.P >= alpha || c.Effect == 0 {
		return NoDifference
	}
	if r.MinEffect > 0 && math.Abs(c.Effect) < r.MinEffect {
		return NoDifference
	}
	if (c.Effect < 0) == r.LowerIsBetter {
		return Better
	}
	return Worse
}
