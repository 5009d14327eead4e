package tune

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/sim"
	"github.com/kiln-gpu/kiln/internal/tune/autotune"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// The outcomes of a tuning run, the outcome label of kiln_tune_runs_total.
const (
	// OutcomeCanaryStarted: a candidate won on the hold-out and its canary
	// started.
	OutcomeCanaryStarted = "canary_started"
	// OutcomeKeptDefaults: nothing beat the current settings on the
	// hold-out by more than margin and noise; nothing changed.
	OutcomeKeptDefaults = "kept_defaults"
	// OutcomeSkippedBusy: another experiment was running.
	OutcomeSkippedBusy = "skipped_busy"
	// OutcomeSkippedFewArrivals: too few recorded arrivals to tune on.
	OutcomeSkippedFewArrivals = "skipped_few_arrivals"
	// OutcomeFailed: the run could not finish (simulator error, timeout,
	// the canary refused).
	OutcomeFailed = "failed"
)

// Outcomes lists the outcomes.
var Outcomes = []string{OutcomeCanaryStarted, OutcomeKeptDefaults, OutcomeSkippedBusy, OutcomeSkippedFewArrivals, OutcomeFailed}

// Experimenter starts canaries: *experiment.Controller.
type Experimenter interface {
	Running() (experiment.Record, bool)
	Start(ctx context.Context, spec experiment.Spec) (experiment.Record, error)
}

// Sources are what a node gives its tuner.
type Sources struct {
	// Requests returns the most recent limit recorded arrivals, oldest
	// first, times relative to the first (Recorder.Requests).
	Requests func(limit int) []sim.Request
	// Node describes the node as the simulator runs it, with the active
	// policies and their parameters, and the catalog's models.
	Node func() (sim.Config, []sim.Model, error)
	// Active names kind k's active policy and its parameters' values now.
	Active func(k abi.Kind) (name string, params map[string]float64, err error)
	// Experiments starts the canary.
	Experiments Experimenter
}

// AutoOptions configure an Auto.
type AutoOptions struct {
	Config  autotune.Config
	Sources Sources
	// Clock paces the runs; Wall is handed to the simulator (its reports'
	// wall-time figures). Both default to the real clock.
	Clock clock.Clock
	Wall  clock.Clock
	// Rand seeds each search; nil seeds one from Seed.
	Rand *rand.Rand
	Seed uint64
	// History is how many runs Status keeps (20 if 0).
	History int
	Log     zerolog.Logger
}

// KindResult is what one run found for one policy kind.
type KindResult struct {
	Kind    string    `json:"kind"`
	Current Candidate `json:"current"`
	// Best is the best setting on the training part and TrainGain its
	// relative gain over the current one there; nil when none was better.
	Best       *Candidate  `json:"best,omitempty"`
	TrainGain  float64     `json:"train_gain"`
	Validation *Validation `json:"validation,omitempty"`
	SimRuns    int         `json:"sim_runs"`
	Note       string      `json:"note"`
}

// Run is one tuning run, as Status reports it.
type Run struct {
	StartedAt time.Time     `json:"started_at"`
	Took      time.Duration `json:"took_ns"`
	Outcome   string        `json:"outcome"`
	Reason    string        `json:"reason"`
	// Arrivals is how many recorded arrivals the run used; Train and
	// Holdout how they were split.
	Arrivals   int          `json:"arrivals"`
	Train      int          `json:"train"`
	Holdout    int          `json:"holdout"`
	Kinds      []KindResult `json:"kinds,omitempty"`
	Experiment string       `json:"experiment,omitempty"`
}

// Status is GET /v1/tune.
type Status struct {
	Auto      bool            `json:"auto"`
	Config    autotune.Config `json:"config"`
	NextRunAt *time.Time      `json:"next_run_at,omitempty"`
	Running   bool            `json:"running"`
	// Counts are the runs by outcome since start.
	Counts map[string]uint64 `json:"counts"`
	// Runs are the most recent runs, newest first.
	Runs []Run `json:"runs"`
}

// Auto is the background tuner of tune.auto (seed 000 §7.1): every
// Config.Interval it searches the active policies' declared parameters
// (and, with Config.TryBuiltins, the other built-ins of each kind) on the
// node's recorded arrivals in the simulator, validates the winner on a
// hold-out of the most recent arrivals that the search never saw, and, if
// it wins there by more than the margin and the noise, starts a canary of
// it through the experiment controller, which judges it on live traffic
// with its guards. Otherwise it keeps the current settings.
//
// At most one canary runs at a time, and a run is skipped while any
// experiment runs. Auto is safe for concurrent use; its runs are
// sequential.
type Auto struct {
	cfg     autotune.Config
	src     Sources
	clk     clock.Clock
	wall    clock.Clock
	log     zerolog.Logger
	history int

	mu      sync.Mutex
	rng     *rand.Rand
	runs    []Run
	counts  map[string]uint64
	next    time.Time
	running bool
}

// NewAuto returns a tuner; Run starts its loop.
func NewAuto(opts AutoOptions) (*Auto, error) {
	cfg := opts.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := opts.Sources
	if s.Requests == nil || s.Node == nil || s.Active == nil || s.Experiments == nil {
		return nil, errors.New("tune: auto: missing a source (requests, node, active policies or experiments)")
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	if opts.Wall == nil {
		opts.Wall = clock.Real()
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x74756e65))
	}
	if opts.History <= 0 {
		opts.History = 20
	}
	a := &Auto{cfg: cfg, src: s, clk: opts.Clock, wall: opts.Wall, log: opts.Log, history: opts.History,
		rng: opts.Rand, counts: map[string]uint64{}}
	for _, o := range Outcomes {
		a.counts[o] = 0
	}
	return a, nil
}

// Run tunes every Config.Interval until ctx ends. The first run comes one
// interval after the start: a node that just started has recorded little.
func (a *Auto) Run(ctx context.Context) {
	for {
		a.mu.Lock()
		a.next = a.clk.Now().Add(a.cfg.Interval)
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-a.clk.After(a.cfg.Interval):
		}
		a.RunOnce(ctx)
	}
}

// RunOnce runs one tuning run now and returns it.
func (a *Auto) RunOnce(ctx context.Context) Run {
	a.mu.Lock()
	a.running = true
	a.mu.Unlock()
	start, wallStart := a.clk.Now(), a.wall.Now()
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	r := a.tune(ctx)
	r.StartedAt, r.Took = start, a.wall.Since(wallStart)
	ev := a.log.Info()
	if r.Outcome == OutcomeFailed {
		ev = a.log.Warn()
	}
	ev.Str("outcome", r.Outcome).Str("reason", r.Reason).Int("arrivals", r.Arrivals).Dur("took", r.Took).
		Str("experiment", r.Experiment).Msg("tuning run")
	a.mu.Lock()
	a.running = false
	a.counts[r.Outcome]++
	a.runs = append(a.runs, r)
	if len(a.runs) > a.history {
		a.runs = slices.Clone(a.runs[len(a.runs)-a.history:])
	}
	a.mu.Unlock()
	return r
}

func (a *Auto) tune(ctx context.Context) Run {
	var r Run
	if rec, ok := a.src.Experiments.Running(); ok {
		r.Outcome, r.Reason = OutcomeSkippedBusy, fmt.Sprintf("experiment %s is running", rec.ID)
		return r
	}
	simCfg, models, err := a.src.Node()
	if err != nil {
		r.Outcome, r.Reason = OutcomeFailed, fmt.Sprintf("describe the node: %v", err)
		return r
	}
	reqs, dropped := known(a.src.Requests(a.cfg.MaxArrivals), models)
	r.Arrivals = len(reqs)
	// Every hold-out block should hold a few jobs, or its gain is noise.
	need := max(a.cfg.MinArrivals, int(float64(5*a.cfg.Repeats)/a.cfg.Holdout)+1)
	if len(reqs) < need {
		r.Outcome = OutcomeSkippedFewArrivals
		r.Reason = fmt.Sprintf("%d recorded arrivals with models in the catalog (%d without); a run needs %d", len(reqs), dropped, need)
		return r
	}
	train, holdout := SplitHoldout(reqs, a.cfg.Holdout)
	r.Train, r.Holdout = len(train), len(holdout)
	budget := max(2, a.cfg.Budget/len(a.cfg.Kinds))
	var winner *KindResult
	for _, name := range a.cfg.Kinds {
		k, err := abi.ParseKind(name)
		if err != nil {
			r.Outcome, r.Reason = OutcomeFailed, err.Error()
			return r
		}
		kr, err := a.tuneKind(ctx, simCfg, models, train, holdout, k, budget)
		if err != nil {
			r.Outcome, r.Reason = OutcomeFailed, fmt.Sprintf("%s: %v", name, err)
			r.Kinds = append(r.Kinds, kr)
			return r
		}
		r.Kinds = append(r.Kinds, kr)
		if v := kr.Validation; v != nil && v.Passed && (winner == nil || v.LowerBound > winner.Validation.LowerBound) {
			winner = &r.Kinds[len(r.Kinds)-1]
		}
	}
	if winner == nil {
		var notes []string
		for _, kr := range r.Kinds {
			notes = append(notes, kr.Kind+": "+kr.Note)
		}
		r.Outcome, r.Reason = OutcomeKeptDefaults, strings.Join(notes, "; ")
		return r
	}
	spec := experiment.Spec{Kind: winner.Kind, Policy: winner.Best.Policy, Params: winner.Best.Params, Type: experiment.Canary}
	if len(a.cfg.Guards) > 0 {
		spec.Guards = slices.Clone(a.cfg.Guards)
	}
	rec, err := a.src.Experiments.Start(ctx, spec)
	switch {
	case errors.Is(err, experiment.ErrBusy):
		r.Outcome, r.Reason = OutcomeSkippedBusy, fmt.Sprintf("an experiment started during the run: %v", err)
	case err != nil:
		r.Outcome, r.Reason = OutcomeFailed, fmt.Sprintf("start the canary of %s %s: %v", winner.Kind, winner.Best.Policy, err)
	default:
		r.Outcome, r.Experiment = OutcomeCanaryStarted, rec.ID
		r.Reason = fmt.Sprintf("%s %s %v: %s; canary %s", winner.Kind, winner.Best.Policy, winner.Best.Params, winner.Validation.Reason, rec.ID)
	}
	return r
}

// tuneKind searches kind k on train and validates the best setting found
// on holdout.
func (a *Auto) tuneKind(ctx context.Context, simCfg sim.Config, models []sim.Model, train, holdout []sim.Request, k abi.Kind, budget int) (KindResult, error) {
	kr := KindResult{Kind: k.String()}
	name, params, err := a.src.Active(k)
	if err != nil {
		return kr, err
	}
	kr.Current = Candidate{Policy: name, Params: params}
	if policy.Builtin(k, name) == nil {
		kr.Note = fmt.Sprintf("active policy %s is %v", name, errNoBuiltin)
		return kr, nil
	}
	pols := []string{name}
	if a.cfg.TryBuiltins {
		for _, b := range policy.BuiltinNames(k) {
			if b != name {
				pols = append(pols, b)
			}
		}
	}
	trace := &sim.Trace{Requests: train}
	objective := a.cfg.Objective
	curScore, rep, err := Evaluate(ctx, simCfg, models, trace, k, name, params, objective, a.wall)
	kr.SimRuns++
	if err != nil {
		return kr, err
	}
	curFailed := rep.Failed
	best, bestScore := kr.Current, curScore
	// The current setting's run is spent; the rest is shared by the
	// policies, a built-in without parameters taking one run.
	left := budget - 1
	for i, p := range pols {
		share := left / (len(pols) - i)
		if share < 1 {
			break
		}
		if _, err := Declared(k, p); err == nil && share >= 2 {
			a.mu.Lock()
			seed := a.rng.Uint64()
			a.mu.Unlock()
			res, err := Search(ctx, simCfg, models, trace, k, p, Options{Budget: share, Seed: seed, Objective: objective, Wall: a.wall})
			if err != nil {
				return kr, err
			}
			kr.SimRuns += len(res.Trials)
			left -= len(res.Trials)
			// Search penalises failures against its own defaults' run; the
			// current setting is the reference here.
			for _, tr := range res.Trials {
				if tr.Failed <= curFailed && tr.Score < bestScore && !(p == name && maps.Equal(tr.Params, params)) {
					best, bestScore = Candidate{Policy: p, Params: tr.Params}, tr.Score
				}
			}
			continue
		}
		if p == name {
			continue // the current setting already ran
		}
		s, rep, err := Evaluate(ctx, simCfg, models, trace, k, p, nil, objective, a.wall)
		kr.SimRuns++
		left--
		if err != nil {
			return kr, err
		}
		if rep.Failed <= curFailed && s < bestScore {
			best, bestScore = Candidate{Policy: p}, s
		}
	}
	// A difference in the last digits is the simulator's arithmetic, not a
	// better setting; it is not worth the hold-out's runs.
	if best.Policy == name && maps.Equal(best.Params, params) || bestScore >= curScore*(1-1e-6) {
		kr.Note = fmt.Sprintf("nothing beat the current setting on the %d training arrivals in %d simulator runs", len(train), kr.SimRuns)
		return kr, nil
	}
	kr.Best = &best
	if curScore > 0 {
		kr.TrainGain = (curScore - bestScore) / curScore
	}
	v, err := ValidateHoldout(ctx, simCfg, models, holdout, k, kr.Current, best, objective, a.cfg.Repeats, a.cfg.Margin, a.wall)
	if err != nil {
		return kr, err
	}
	kr.SimRuns += v.SimRuns
	kr.Validation = v
	kr.Note = fmt.Sprintf("%s %v: %.1f%% better on the training part; %s", best.Policy, best.Params, 100*kr.TrainGain, v.Reason)
	return kr, nil
}

// known keeps the requests whose models are all in the catalog: a model
// removed since cannot be simulated.
func known(reqs []sim.Request, models []sim.Model) (kept []sim.Request, dropped int) {
	ids := make(map[string]bool, len(models))
	for _, m := range models {
		ids[m.ID] = true
	}
	for _, r := range reqs {
		ok := len(r.Models) > 0
		for _, m := range r.Models {
			ok = ok && ids[m]
		}
		if ok {
			kept = append(kept, r)
		} else {
			dropped++
		}
	}
	return kept, dropped
}

// Status reports the tuner's config, its next run and its recent runs.
func (a *Auto) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{Auto: a.cfg.Auto, Config: a.cfg, Running: a.running, Counts: maps.Clone(a.counts), Runs: []Run{}}
	if !a.next.IsZero() {
		next := a.next
		st.NextRunAt = &next
	}
	for i := len(a.runs) - 1; i >= 0; i-- {
		st.Runs = append(st.Runs, a.runs[i])
	}
	return st
}

var descRuns = prometheus.NewDesc("kiln_tune_runs_total", "Tuning runs of tune.auto by outcome.", []string{"outcome"}, nil)

// Describe implements prometheus.Collector.
func (a *Auto) Describe(ch chan<- *prometheus.Desc) { ch <- descRuns }

// Collect implements prometheus.Collector.
func (a *Auto) Collect(ch chan<- prometheus.Metric) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range Outcomes {
		ch <- prometheus.MustNewConstMetric(descRuns, prometheus.CounterValue, float64(a.counts[o]), o)
	}
}

var _ prometheus.Collector = (*Auto)(nil)
var _ Experimenter = (*experiment.Controller)(nil)
