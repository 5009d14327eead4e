package stats

import "math"

// SequentialConfig configures always-valid monitoring of a difference in
// means (or proportions) between baseline A and candidate B.
type SequentialConfig struct {
	// Alpha is the level of the confidence sequence and of Rejected
	// (DefaultAlpha if zero). The always-valid p-value does not depend on it.
	Alpha float64
	// Proportion is true when observations are 0/1 (a hit, an error, an SLO
	// miss): the variance is then p(1−p), estimated with half a success of
	// smoothing so that an arm with no successes yet has some variance.
	Proportion bool
	// EffectSize is the standardized difference (in per-observation standard
	// deviations) the mixture is tuned for: the test is most powerful near
	// it and valid for every effect. 0.2 if zero.
	EffectSize float64
	// MixtureSD, if positive, fixes the mixing standard deviation τ in the
	// metric's own units and overrides EffectSize.
	MixtureSD float64
	// MinN is the fewest observations per arm before a look computes
	// anything; below it the variance estimate is too noisy for the normal
	// approximation to hold. 20 if zero.
	MinN int
}

// Sequential accumulates observations per arm and answers, at any look, an
// always-valid p-value and confidence sequence for mean(B) − mean(A).
//
// "Always valid" means the probability that P ever falls below alpha under
// the null, over all looks however many and whenever taken, is at most alpha:
// a canary may check after every window and stop at the first rejection.
// A fixed-horizon test checked the same way would reject far more often.
//
// # Notes
//
// This is the mixture sequential probability ratio test of Johari, Pekelis
// and Walsh ("Always valid inference", 2017, the test behind Optimizely's
// stats engine) with a normal mixture N(0, τ²) over the effect and the
// normal approximation for the difference of means, whose variance
// V = s²_A/n_A + s²_B/n_B is re-estimated at each look:
//
//	Λ = √(V/(V+τ²)) · exp(τ²·d² / (2V(V+τ²)))     p = min over looks of 1/Λ
//
// The confidence sequence is the set of effects the same test would not
// reject, intersected over looks (Howard et al. 2021). Validity is
// asymptotic: it relies on the normal approximation, hence MinN.
//
// A Sequential is not safe for concurrent use.
type Sequential struct {
	cfg    SequentialConfig
	a, b   moments
	p      float64
	low    float64
	high   float64
	looks  int
	bounds bool
}

// moments keeps a running mean and sum of squared deviations (Welford), which
// stays accurate for latencies with a large mean and small spread.
type moments struct {
	n    int
	mean float64
	m2   float64
}

func (m *moments) add(x float64) {
	m.n++
	d := x - m.mean
	m.mean += d / float64(m.n)
	m.m2 += d * (x - m.mean)
}

func (m *moments) variance() float64 {
	if m.n < 2 {
		return 0
	}
	return m.m2 / float64(m.n-1)
}

// NewSequential returns an empty monitor.
func NewSequential(cfg SequentialConfig) *Sequential {
	if !(cfg.Alpha > 0 && cfg.Alpha < 1) {
		cfg.Alpha = DefaultAlpha
	}
	if cfg.EffectSize <= 0 {
		cfg.EffectSize = 0.2
	}
	if cfg.MinN <= 0 {
		cfg.MinN = 20
	}
	if cfg.MinN < 2 {
		cfg.MinN = 2
	}
	return &Sequential{cfg: cfg, p: 1, low: math.Inf(-1), high: math.Inf(1)}
}

// AddA records one baseline observation. Non-finite values are dropped.
func (s *Sequential) AddA(x float64) {
	if !math.IsNaN(x) && !math.IsInf(x, 0) {
		s.a.add(x)
	}
}

// AddB records one candidate observation. Non-finite values are dropped.
func (s *Sequential) AddB(x float64) {
	if !math.IsNaN(x) && !math.IsInf(x, 0) {
		s.b.add(x)
	}
}

// SequentialResult is what one look at a Sequential reports.
type SequentialResult struct {
	NA, NB       int
	MeanA, MeanB float64
	// Diff is MeanB − MeanA.
	Diff float64
	// P is the always-valid p-value: the smallest over all looks so far.
	P float64
	// Bounded is false until a look has had MinN observations per arm; until
	// then Low and High are 0 and mean "unbounded".
	Bounded bool
	// Low and High are the confidence sequence at level 1 − Alpha,
	// intersected over all looks.
	Low, High float64
	// Rejected is P ≤ Alpha: the arms differ, and it stays true.
	Rejected bool
	Looks    int
	Alpha    float64
}

// Comparison returns the result in the shape Decide judges. Decide with the
// same Alpha then agrees with Rejected (and with MinN applied on top).
func (r SequentialResult) Comparison() Comparison {
	return Comparison{NA: r.NA, NB: r.NB, Effect: r.Diff, Low: r.Low, High: r.High, P: r.P}
}

// Look updates the always-valid p-value and confidence sequence with all the
// observations so far and reports them. Each call is a look; looking more
// often never invalidates the result, it only costs O(1).
func (s *Sequential) Look() SequentialResult {
	s.looks++
	diff := s.b.mean - s.a.mean
	if s.a.n >= s.cfg.MinN && s.b.n >= s.cfg.MinN {
		varA, varB := s.a.variance(), s.b.variance()
		if s.cfg.Proportion {
			varA, varB = smoothedBernoulliVar(s.a), smoothedBernoulliVar(s.b)
		}
		v := varA/float64(s.a.n) + varB/float64(s.b.n)
		tau2 := s.cfg.MixtureSD * s.cfg.MixtureSD
		if tau2 <= 0 {
			tau2 = s.cfg.EffectSize * s.cfg.EffectSize * (varA + varB) / 2
		}
		if v > 0 && tau2 > 0 {
			logLambda := 0.5*math.Log(v/(v+tau2)) + tau2*diff*diff/(2*v*(v+tau2))
			s.p = math.Min(s.p, math.Min(1, math.Exp(-logLambda)))
			h := math.Sqrt(2 * v * (v + tau2) / tau2 * (math.Log(1/s.cfg.Alpha) + 0.5*math.Log((v+tau2)/v)))
			s.low = math.Max(s.low, diff-h)
			s.high = math.Min(s.high, diff+h)
			if s.low > s.high {
				// The running intersection can empty when the plug-in
				// variance shrinks faster than the mean moves; keep the
				// interval well-formed around the edge where it closed.
				mid := (s.low + s.high) / 2
				s.low, s.high = mid, mid
			}
			s.bounds = true
		}
	}
	r := SequentialResult{
		NA: s.a.n, NB: s.b.n, MeanA: s.a.mean, MeanB: s.b.mean, Diff: diff,
		P: s.p, Bounded: s.bounds, Rejected: s.p <= s.cfg.Alpha, Looks: s.looks, Alpha: s.cfg.Alpha,
	}
	if s.bounds {
		r.Low, r.High = s.low, s.high
	}
	return r
}

func smoothedBernoulliVar(m moments) float64 {
	// mean·n is the success count; (x+½)/(n+1) keeps p off 0 and 1.
	p := (m.mean*float64(m.n) + 0.5) / float64(m.n+1)
	return p * (1 - p)
}
