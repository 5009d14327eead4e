package experiment

import (
	"math"
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/kernel/stats"
)

// pairWindow is the width of the time windows whose per-arm means are
// paired (unit workers and traffic): jobs of both arms that finish in the
// same minute saw the same bursts, so their difference carries little of
// the burst and the queue state it left.
const pairWindow = time.Minute

// minWindows is the fewest paired windows before a windowed test says
// anything: the long-run variance needs a series several times longer
// than its bandwidth.
const minWindows = 20

// minEffective is the fewest effective (independent-equivalent) terms a
// windowed test needs: the series' length times its plain variance over
// its long-run variance.
const minEffective = 15

// pairedSeries accumulates one metric of both arms per window and turns
// each closed window in which both arms have an observation into one
// difference, candidate − baseline. A window index is the window of the
// observation (its finish time's minute, or a switchback's window pair);
// a window is closed once the controller's clock is lag past its end.
//
// The series of differences is what the gating tests see. Differences of
// neighbouring windows are still correlated (a backlog outlives a
// minute), which the test's long-run variance accounts for (autoSeq).
type pairedSeries struct {
	origin time.Time
	width  time.Duration
	lag    time.Duration
	open   map[int]*[2]winAcc
	closed int // windows below this index are closed

	diffs []float64
	// n and sum count every observation per arm (also in windows without
	// a partner), for the reported means and counts.
	n   [2]int
	sum [2]float64
	// pairedBase is the sum of the baseline's window means over paired
	// windows: the scale of relative effects and of the test's mixture.
	pairedBase float64
}

type winAcc struct {
	n   int
	sum float64
}

func newPairedSeries(origin time.Time, width, lag time.Duration) *pairedSeries {
	return &pairedSeries{origin: origin, width: width, lag: lag, open: map[int]*[2]winAcc{}}
}

// index is the window of time t.
func (p *pairedSeries) index(t time.Time) int {
	if t.Before(p.origin) {
		return 0
	}
	return int(t.Sub(p.origin) / p.width)
}

// add counts x for arm in window w. An observation of a window already
// closed is counted in the arm's totals only.
func (p *pairedSeries) add(arm, w int, x float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return
	}
	p.n[arm]++
	p.sum[arm] += x
	if w < p.closed {
		return
	}
	acc := p.open[w]
	if acc == nil {
		acc = &[2]winAcc{}
		p.open[w] = acc
	}
	acc[arm].n++
	acc[arm].sum += x
}

// close turns every window that ended at least lag before now into a
// difference, in window order.
func (p *pairedSeries) close(now time.Time) {
	upto := p.index(now.Add(-p.lag)) // windows below upto have ended lag ago
	if upto <= p.closed {
		return
	}
	var ws []int
	for w := range p.open {
		if w < upto {
			ws = append(ws, w)
		}
	}
	slices.Sort(ws)
	for _, w := range ws {
		acc := p.open[w]
		delete(p.open, w)
		if acc[0].n == 0 || acc[1].n == 0 {
			continue
		}
		a, b := acc[0].sum/float64(acc[0].n), acc[1].sum/float64(acc[1].n)
		p.diffs = append(p.diffs, b-a)
		p.pairedBase += a
	}
	p.closed = upto
}

// rateFloor is the binomial variance of a difference of two rates with
// the arms' counts, half a success of smoothing: the least a series of 0/1
// observations can be trusted to vary.
func (p *pairedSeries) rateFloor() float64 {
	na, nb := float64(p.n[0]), float64(p.n[1])
	if na == 0 || nb == 0 {
		return 0
	}
	q := (p.sum[0] + p.sum[1] + 0.5) / (na + nb + 1)
	return q * (1 - q) * (1/na + 1/nb)
}

// baseMean is the baseline's mean over the paired windows (0 without any).
func (p *pairedSeries) baseMean() float64 {
	if len(p.diffs) == 0 {
		return 0
	}
	return p.pairedBase / float64(len(p.diffs))
}

// autoSeq is an always-valid test that a series of differences has mean
// zero, for series whose terms are correlated: the mixture sequential
// probability ratio test of kernel/stats.Sequential, with the variance of
// the mean taken from the series' long-run variance (Newey–West, Bartlett
// kernel) instead of the variance of one term over n.
//
// # Notes
//
// The test is valid as long as the variance estimate is, which is why it
// waits for minWindows terms and never uses less than the iid variance:
// an underestimated variance is exactly what rolled back A/A canaries on
// bursty traffic. The mixture's standard deviation τ is fixed, in the
// metric's units, at the first look that computes anything (so that it
// does not follow the data afterwards). P is the minimum over looks of
// 1/Λ; the interval is the current look's confidence set, not the running
// intersection, so a rollback needs the evidence of now as well as a
// p-value that once crossed alpha.
type autoSeq struct {
	alpha float64
	// tauOf gives τ from the baseline's mean at the first bounded look.
	tauOf func(baseMean float64) float64
	tau   float64
	p     float64
	looks int
}

func newAutoSeq(alpha float64, tauOf func(float64) float64) *autoSeq {
	return &autoSeq{alpha: alpha, tauOf: tauOf, p: 1}
}

// seqLook is one look of an autoSeq.
type seqLook struct {
	N       int // terms of the series
	Mean    float64
	Low     float64
	High    float64
	Half    float64 // half-width of the confidence set
	P       float64
	Bounded bool
}

// look tests the series as it stands. floor is the least variance of the
// mean to assume (for rates: the binomial variance of the counts, so that
// a series of zeros, no errors in either arm, still bounds the effect).
func (s *autoSeq) look(d []float64, baseMean, floor float64) seqLook {
	s.looks++
	r := seqLook{N: len(d), P: s.p}
	if len(d) == 0 {
		return r
	}
	r.Mean = stats.Mean(d)
	if len(d) < minWindows {
		return r
	}
	lrv, iid := longRunVariance(d)
	// The normal approximation needs enough independent information, not
	// just terms: a series as persistent as AR(1) with ρ = 0.8 carries a
	// ninth of its length. Wait for minEffective effective terms.
	if lrv > 0 && float64(len(d))*iid/lrv < minEffective {
		return r
	}
	v := max(lrv/float64(len(d)), floor)
	if s.tau == 0 {
		s.tau = s.tauOf(baseMean)
	}
	tau2 := s.tau * s.tau
	if !(v > 0) || !(tau2 > 0) {
		return r
	}
	logLambda := 0.5*math.Log(v/(v+tau2)) + tau2*r.Mean*r.Mean/(2*v*(v+tau2))
	s.p = math.Min(s.p, math.Min(1, math.Exp(-logLambda)))
	h := math.Sqrt(2 * v * (v + tau2) / tau2 * (math.Log(1/s.alpha) + 0.5*math.Log((v+tau2)/v)))
	r.P, r.Low, r.High, r.Half, r.Bounded = s.p, r.Mean-h, r.Mean+h, h, true
	return r
}

// longRunVariance estimates σ² such that Var(mean of n terms) ≈ σ²/n for
// a stationary, correlated series: the Bartlett-kernel (Newey–West) sum of
// autocovariances up to a bandwidth of 2·n^⅓ terms, times n/(n−L) for the
// bias a short series' estimated mean leaves, and never below the AR(1)
// plug-in estimate nor the plain variance (negative autocorrelation is not
// credited).
//
// It returns the plain variance too, for the effective sample size.
func longRunVariance(d []float64) (lrv, iid float64) {
	n := len(d)
	if n < 2 {
		return 0, 0
	}
	m := stats.Mean(d)
	gamma := func(k int) float64 {
		var s float64
		for i := k; i < n; i++ {
			s += (d[i] - m) * (d[i-k] - m)
		}
		return s / float64(n)
	}
	g0 := gamma(0)
	L := min(int(math.Ceil(2*math.Cbrt(float64(n)))), n-1)
	lrv = g0
	for k := 1; k <= L; k++ {
		lrv += 2 * (1 - float64(k)/float64(L+1)) * gamma(k)
	}
	if n > L+1 {
		lrv *= float64(n) / float64(n-L)
	}
	iid = g0 * float64(n) / float64(n-1)
	// A series as persistent as a queue's backlog (lag-1 correlation near
	// one) has far more long-run variance than a bandwidth of a few terms
	// sees; the AR(1) plug-in (1+ρ)/(1−ρ), with ρ's short-series bias
	// (≈ (1+3ρ)/n) added back, bounds it from below.
	if g0 > 0 {
		rho := gamma(1) / g0
		rho = min(max(rho+(1+3*rho)/float64(n), 0), 0.95)
		lrv = math.Max(lrv, iid*(1+rho)/(1-rho))
	}
	return math.Max(lrv, iid), iid
}
