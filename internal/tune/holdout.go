package tune

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/sim"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Candidate is one policy setting of a kind: a built-in and the values of
// its parameters (nil: its current or declared ones).
type Candidate struct {
	Policy string             `json:"policy"`
	Params map[string]float64 `json:"params,omitempty"`
}

// SplitHoldout cuts time-ordered requests into the part a search tunes on
// and the hold-out that validates its winner: the last frac of them. The
// hold-out is the most recent traffic, so a winner must hold on arrivals
// that came after everything it was tuned on, as it must live. Both parts
// are rebased to start at time 0.
func SplitHoldout(reqs []sim.Request, frac float64) (train, holdout []sim.Request) {
	n := len(reqs) - int(math.Round(frac*float64(len(reqs))))
	n = max(0, min(len(reqs), n))
	return rebase(reqs[:n]), rebase(reqs[n:])
}

// Blocks cuts time-ordered requests into n consecutive parts of nearly
// equal counts, each rebased to start at time 0.
func Blocks(reqs []sim.Request, n int) [][]sim.Request {
	out := make([][]sim.Request, 0, n)
	for i := range n {
		lo, hi := i*len(reqs)/n, (i+1)*len(reqs)/n
		out = append(out, rebase(reqs[lo:hi]))
	}
	return out
}

func rebase(reqs []sim.Request) []sim.Request {
	out := make([]sim.Request, len(reqs))
	copy(out, reqs)
	if len(out) == 0 {
		return out
	}
	t0 := out[0].Time
	for i := range out {
		out[i].Time -= t0
	}
	return out
}

// Validation is the hold-out check of a search's winner against the
// current setting of its kind.
type Validation struct {
	Baseline  Candidate `json:"baseline"`
	Candidate Candidate `json:"candidate"`
	Objective string    `json:"objective"`
	// BaselineScore and CandidateScore are the objective on the whole
	// hold-out; Gain is the candidate's relative improvement there.
	BaselineScore  float64 `json:"baseline_score"`
	CandidateScore float64 `json:"candidate_score"`
	Gain           float64 `json:"gain"`
	// BlockGains are the paired gains on each block of the hold-out, as a
	// fraction of the baseline's mean block score; Noise is the one-sided
	// 95% half-width of their mean (Student's t), and LowerBound the mean
	// less Noise.
	BlockGains []float64 `json:"block_gains"`
	MeanGain   float64   `json:"mean_gain"`
	Noise      float64   `json:"noise"`
	LowerBound float64   `json:"lower_bound"`
	// Margin is what LowerBound and Gain had to exceed.
	Margin float64 `json:"margin"`
	// BaselineFailed and CandidateFailed count failed jobs over every
	// hold-out run of each.
	BaselineFailed  int `json:"baseline_failed"`
	CandidateFailed int `json:"candidate_failed"`
	// Passed is true when the candidate is worth a canary; Reason says why
	// or why not.
	Passed  bool   `json:"passed"`
	Reason  string `json:"reason"`
	SimRuns int    `json:"sim_runs"`
}

// tQuantile95 is Student's t one-sided 95% quantile by degrees of freedom
// (1 to 19, the range tune.repeats allows); beyond, the normal's.
var tQuantile95 = []float64{0, 6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
	1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729}

func t95(df int) float64 {
	if df >= 1 && df < len(tQuantile95) {
		return tQuantile95[df]
	}
	return 1.645
}

// ValidateHoldout runs the baseline and the candidate of kind k on the
// hold-out, whole and in repeats consecutive blocks, and passes the
// candidate only if it fails no more jobs, its gain on the whole hold-out
// exceeds margin, and the lower end of its mean block gain (the mean less
// the noise of the blocks' spread) does too.
//
// # Notes
//
// The simulator is deterministic, so running one trace twice measures no
// noise; what varies from one run of traffic to the next is the traffic.
// The blocks are that: repeated runs on different stretches of traffic
// the search never saw, paired (each block runs under both settings), so
// that the block-to-block spread of the gain is the noise a live canary
// would see between equally long windows.
func ValidateHoldout(ctx context.Context, cfg sim.Config, models []sim.Model, holdout []sim.Request, k abi.Kind,
	base, cand Candidate, objective string, repeats int, margin float64, wall clock.Clock) (*Validation, error) {
	if repeats < 2 {
		return nil, fmt.Errorf("tune: validate: %d blocks: need at least 2 to measure noise", repeats)
	}
	if len(holdout) < repeats {
		return nil, fmt.Errorf("tune: validate: %d hold-out arrivals cannot make %d blocks", len(holdout), repeats)
	}
	v := &Validation{Baseline: base, Candidate: cand, Objective: objective, Margin: margin}
	run := func(c Candidate, reqs []sim.Request) (float64, int, error) {
		v.SimRuns++
		s, rep, err := Evaluate(ctx, cfg, models, &sim.Trace{Requests: reqs}, k, c.Policy, c.Params, objective, wall)
		if err != nil {
			return 0, 0, fmt.Errorf("tune: validate %s %s: %w", k, c.Policy, err)
		}
		return s, rep.Failed, nil
	}
	var err error
	var f int
	if v.BaselineScore, f, err = run(base, holdout); err != nil {
		return nil, err
	}
	v.BaselineFailed += f
	if v.CandidateScore, f, err = run(cand, holdout); err != nil {
		return nil, err
	}
	v.CandidateFailed += f
	var bs, cs []float64
	for _, b := range Blocks(holdout, repeats) {
		s, f, err := run(base, b)
		if err != nil {
			return nil, err
		}
		bs, v.BaselineFailed = append(bs, s), v.BaselineFailed+f
		if s, f, err = run(cand, b); err != nil {
			return nil, err
		}
		cs, v.CandidateFailed = append(cs, s), v.CandidateFailed+f
	}
	var meanBase float64
	for _, s := range bs {
		meanBase += s / float64(len(bs))
	}
	switch {
	case v.CandidateFailed > v.BaselineFailed:
		v.Reason = fmt.Sprintf("the candidate failed %d jobs on the hold-out, the current setting %d", v.CandidateFailed, v.BaselineFailed)
		return v, nil
	case v.BaselineScore <= 0 || meanBase <= 0:
		v.Reason = fmt.Sprintf("the current setting scores %g on the hold-out's %s: nothing to gain", v.BaselineScore, objective)
		return v, nil
	}
	v.Gain = (v.BaselineScore - v.CandidateScore) / v.BaselineScore
	// Each block's gain is taken against the mean baseline block score, not
	// its own: a block with almost no traffic would otherwise turn a
	// difference of a few milliseconds into a huge relative swing.
	for i := range bs {
		v.BlockGains = append(v.BlockGains, (bs[i]-cs[i])/meanBase)
	}
	var sd float64
	for _, g := range v.BlockGains {
		v.MeanGain += g / float64(len(v.BlockGains))
	}
	for _, g := range v.BlockGains {
		sd += (g - v.MeanGain) * (g - v.MeanGain)
	}
	sd = math.Sqrt(sd / float64(len(v.BlockGains)-1))
	v.Noise = t95(len(v.BlockGains)-1) * sd / math.Sqrt(float64(len(v.BlockGains)))
	v.LowerBound = v.MeanGain - v.Noise
	switch {
	case v.Gain <= margin:
		v.Reason = fmt.Sprintf("gain on the hold-out %.1f%% is not above the margin %.1f%%", 100*v.Gain, 100*margin)
	case v.LowerBound <= margin:
		v.Reason = fmt.Sprintf("gain on the hold-out's blocks %.1f%% ± %.1f%% (noise) does not clear the margin %.1f%%",
			100*v.MeanGain, 100*v.Noise, 100*margin)
	default:
		v.Passed = true
		v.Reason = fmt.Sprintf("gain on the hold-out %.1f%%, on its blocks %.1f%% ± %.1f%% (noise), above the margin %.1f%%",
			100*v.Gain, 100*v.MeanGain, 100*v.Noise, 100*margin)
	}
	return v, nil
}

// errNoBuiltin is why a kind whose active policy is not a built-in is not
// tuned: the simulator builds its policies from built-in names.
var errNoBuiltin = errors.New("not a built-in: the simulator runs built-ins only")
