package experiment

import (
	"math"
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/internal/stats"
)

// pairWindow is the default width (experiments.pair_window) of the time
// windows whose per-arm means are paired (unit workers and traffic): jobs of both arms that finish in the
// same minute saw the same bursts, so their difference carries little of
// the burst and the queue state it left.
const pairWindow = time.Minute

// pairedSeries accumulates one metric of both arms per window and turns
// each closed window in which both arms have an observation into one
// difference, candidate − baseline. A window index is the window of the
// observation (its finish time's minute, or a switchback's window pair);
// a window is closed once the controller's clock is lag past its end.
//
// The series of differences is what the gating tests see. Differences of
// neighbouring windows are still correlated (a backlog outlives a
// minute), which the test's batch means account for (autoSeq).
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
	// relative makes each difference the log of the ratio of the window
	// means, candidate over baseline (latencies; see newTests).
	relative bool
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
		if p.relative {
			if !(a > 0 && b > 0) {
				continue
			}
			p.diffs = append(p.diffs, math.Log(b/a))
		} else {
			p.diffs = append(p.diffs, b-a)
		}
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

// The look plan of every gating test (RATIONALE.md, "group-sequential
// batch means"): the first look at firstLook terms, then every time the
// series has grown by lookGrowth, at most maxLooks looks, none past the
// experiment's horizon.
const (
	firstLook   = 20
	lookGrowth  = 1.5
	maxLooks    = 12
	lookBatches = 20
	// rhoUpperZ makes the lag-1 correlation an upper 95% confidence bound:
	// a short series underestimates how persistent it is, and the batch
	// means' correction is only as good as that estimate.
	rhoUpperZ = 1.645
)

// autoSeq is a group-sequential test that a series of correlated
// differences has mean zero: batch means with a Student-t reference at a
// bounded plan of looks, alpha spent over the looks (Bonferroni, weighted
// by each look's length), the batch-means variance corrected for the
// correlation that short batches keep.
//
// # Notes
//
// At a look on n terms the series (its last m·B terms) is cut into B =
// min(10, n/2) batches of m terms; the batch means are much less
// correlated than the terms and their spread gives the variance of the
// mean with B − 1 degrees of freedom. Batches of a few minutes do not make
// a queue's memory vanish, so the variance is multiplied by what AR(1)
// with ρ at its upper 95% bound says the batch means still hide: V_n·(B−1)
// / (V_m − V_n), V_k being the variance of a mean of k terms. A look is
// skipped (its alpha unspent) when that ρ leaves fewer than minEffective
// independent-equivalent terms: such a series says nothing yet.
//
// Look k gets alpha·n_k/Σn_j. Bonferroni over looks needs no joint
// distribution of the looks, so it holds for any correlation between
// them; weighting by length gives the late looks, where the information
// is, most of the error. The p-value is min over looks of p_k·Σn_j/n_k,
// comparable with alpha. The interval and the effect are the last look's;
// between looks they stay as they were.
//
// TestAutoSeqHoldsAlphaOnCorrelatedSeries checks the false-rejection rate
// on AR(1) series with ρ up to 0.9 and on a regime-switching series.
type autoSeq struct {
	alpha   float64
	plan    []int
	weights []float64
	next    int // index of the next look in plan
	last    seqLook
	p       float64
}

// newAutoSeq is a test at alpha for a series that can grow to horizon
// terms (the experiment's deadline over its window width): the plan has
// no look beyond it, so that no alpha is kept for looks that cannot come.
func newAutoSeq(alpha float64, horizon int) *autoSeq {
	s := &autoSeq{alpha: alpha, plan: lookPlan(horizon), p: 1}
	var total float64
	for _, n := range s.plan {
		total += float64(n)
	}
	for _, n := range s.plan {
		s.weights = append(s.weights, float64(n)/total)
	}
	return s
}

// lookPlan is the series lengths at which a test of that horizon looks:
// firstLook, then ×lookGrowth, up to horizon and maxLooks; a horizon
// shorter than firstLook (a switchback of few window pairs) gets one look
// at its end if it has at least half of firstLook.
func lookPlan(horizon int) []int {
	if horizon < firstLook {
		if horizon >= firstLook/2 {
			return []int{horizon}
		}
		return nil
	}
	var plan []int
	for n := float64(firstLook); int(n) <= horizon && len(plan) < maxLooks; n = math.Ceil(n * lookGrowth) {
		plan = append(plan, int(n))
	}
	return plan
}

// minEffective is the fewest independent-equivalent terms (n(1−ρ)/(1+ρ),
// ρ at its upper bound) a look needs before it says anything.
const minEffective = 8

// seqLook is one look of an autoSeq.
type seqLook struct {
	N       int // terms of the series at the look
	Mean    float64
	Low     float64
	High    float64
	Half    float64 // half-width of the confidence interval
	P       float64 // adjusted for the looks: compare with alpha
	Bounded bool
}

// look tests the series as it stands: when it has reached the next
// planned length it takes that look on exactly that many terms (skipping
// looks a long gap jumped over, whose alpha then stays unspent), else it
// returns the last look. floor is the least variance of the mean to
// assume (for rates: the binomial variance of the counts, so that a series
// of zeros, no errors in either arm, still bounds the effect).
func (s *autoSeq) look(d []float64, floor float64) seqLook {
	k := -1
	for s.next < len(s.plan) && s.plan[s.next] <= len(d) {
		k = s.next
		s.next++
	}
	if k < 0 {
		r := s.last
		if !r.Bounded {
			r.N, r.P = len(d), s.p
			if len(d) > 0 {
				r.Mean = stats.Mean(d)
			}
		}
		return r
	}
	r, ok := batchLook(d[:s.plan[k]], s.alpha*s.weights[k], floor)
	if !ok {
		// Too persistent (or constant) to bound: this look's alpha stays
		// unspent, the last bounded look stands.
		if !s.last.Bounded {
			s.last = seqLook{N: len(d), Mean: stats.Mean(d), P: s.p}
		}
		return s.last
	}
	s.p = math.Min(s.p, math.Min(1, r.P/s.weights[k]))
	r.P = s.p
	s.last = r
	return r
}

// batchLook is one look's batch-means t-test at level alpha: the mean of
// d, its (1 − alpha) interval and its two-sided p-value; ok is false when
// the series is too persistent or too constant to bound.
func batchLook(d []float64, alpha, floor float64) (seqLook, bool) {
	n := len(d)
	b := min(lookBatches, n/2)
	if b < 2 {
		return seqLook{}, false
	}
	m := n / b
	x := d[n-m*b:]
	means := make([]float64, b)
	for i := range b {
		means[i] = stats.Mean(x[i*m : (i+1)*m])
	}
	mu := stats.Mean(x)
	var ss float64
	for _, v := range means {
		ss += (v - mu) * (v - mu)
	}
	rho := rhoUpper(d)
	if float64(n)*(1-rho)/(1+rho) < minEffective {
		return seqLook{}, false
	}
	v := batchInflation(rho, m, b) * ss / float64(b-1) / float64(b)
	v = math.Max(v, floor)
	if !(v > 0) {
		return seqLook{}, false
	}
	se := math.Sqrt(v)
	df := float64(b - 1)
	h := stats.StudentTQuantile(1-alpha/2, df) * se
	p := math.Min(1, 2*stats.StudentTSF(math.Abs(mu)/se, df))
	return seqLook{N: n, Mean: mu, Low: mu - h, High: mu + h, Half: h, P: p, Bounded: true}, true
}

// rhoUpper is an upper 95% bound on the series' lag-1 autocorrelation:
// the estimate, plus its short-series bias (≈ (1+3ρ)/n), plus rhoUpperZ
// standard errors √((1−ρ²)/n); never below 0 (negative correlation is not
// credited), at most 0.98.
func rhoUpper(d []float64) float64 {
	r, ok := lag1(d)
	if !ok {
		return 0
	}
	n := float64(len(d))
	up := r + (1+3*r)/n + rhoUpperZ*math.Sqrt((1-r*r)/n)
	return min(max(up, 0), 0.95)
}

// lag1 is the series' lag-1 autocorrelation, clamped to [0, 0.99]
// (negative correlation is not credited); ok is false for a constant or
// empty series.
func lag1(d []float64) (r float64, ok bool) {
	m := stats.Mean(d)
	var g0, g1 float64
	for i, v := range d {
		g0 += (v - m) * (v - m)
		if i > 0 {
			g1 += (v - m) * (d[i-1] - m)
		}
	}
	if !(g0 > 0) {
		return 0, false
	}
	return min(max(g1/g0, 0), 0.99), true
}

// batchInflation is, for an AR(1) series with lag-1 correlation rho, the
// ratio of the true variance of the mean of b batches of m terms to the
// expected batch-means estimate of it: V_n·(b−1)/(V_m − V_n), n = m·b. It
// is 1 for independent terms and grows as the batches get short against
// the series' memory; never below 1.
func batchInflation(rho float64, m, b int) float64 {
	if rho <= 0 {
		return 1
	}
	vn, vm := meanVariance(rho, m*b), meanVariance(rho, m)
	if !(vm > vn) {
		return 1
	}
	return math.Max(1, vn*float64(b-1)/(vm-vn))
}

// meanVariance is the variance of the mean of n consecutive terms of a
// unit-variance AR(1) series: (n + 2Σ_{k<n}(n−k)ρ^k)/n².
func meanVariance(rho float64, n int) float64 {
	s, p := float64(n), 1.0
	for k := 1; k < n; k++ {
		p *= rho
		s += 2 * float64(n-k) * p
	}
	return s / float64(n*n)
}
