package tune

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/sim"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Objectives a search can minimise, by name.
const (
	ObjectiveMeanLatency = "mean_latency"
	ObjectiveP95Latency  = "p95_latency"
	ObjectiveP99Latency  = "p99_latency"
	ObjectiveSLOMiss     = "slo_miss"
	ObjectiveLoadTime    = "load_time"
)

// Objectives lists the objective names.
var Objectives = []string{ObjectiveMeanLatency, ObjectiveP95Latency, ObjectiveP99Latency, ObjectiveSLOMiss, ObjectiveLoadTime}

// DefaultBudget is the number of simulator runs when Options.Budget is 0.
const DefaultBudget = 24

// failedPenalty is what each job a trial fails beyond the defaults' run
// adds to its score: a candidate that makes more jobs fail is never better
// than one that does not, whatever its latencies.
const failedPenalty = 1e6

// Options shape a search.
type Options struct {
	// Budget is the number of simulator runs, the defaults' run included
	// (DefaultBudget if 0; at least 2).
	Budget int
	// Seed seeds the random phase.
	Seed uint64
	// Objective is minimised (ObjectiveMeanLatency if empty).
	Objective string
	// Params restricts the search to these parameters (empty: all).
	Params []string
	// Wall is passed to the simulator (its reports' wall-time figures).
	Wall clock.Clock
}

// Trial is one simulator run of the search.
type Trial struct {
	Params map[string]float64 `json:"params"`
	Score  float64            `json:"score"`
	// Phase is "defaults", "random" or "refine".
	Phase         string  `json:"phase"`
	MeanLatencyS  float64 `json:"mean_latency_s"`
	P95LatencyS   float64 `json:"p95_latency_s"`
	SLOAttainment float64 `json:"slo_attainment"`
	LoadTimeS     float64 `json:"total_load_time_s"`
	Failed        int     `json:"failed"`
}

// Result is a search's outcome, the "tune" object of `kiln sim --tune`.
type Result struct {
	Kind      string      `json:"kind"`
	Policy    string      `json:"policy"`
	Objective string      `json:"objective"`
	Budget    int         `json:"budget"`
	Seed      uint64      `json:"seed"`
	Declared  []abi.Param `json:"declared"`
	// Defaults and DefaultScore are the declared defaults and their score.
	Defaults     map[string]float64 `json:"defaults"`
	DefaultScore float64            `json:"default_score"`
	// Best and BestScore are the best point found (the defaults when
	// nothing beat them).
	Best      map[string]float64 `json:"best"`
	BestScore float64            `json:"best_score"`
	// Gain is (DefaultScore − BestScore) / DefaultScore: the fraction of
	// the objective the best point saves; 0 when nothing was better.
	Gain   float64 `json:"gain"`
	Trials []Trial `json:"trials"`
}

// Declared returns the tunable parameters the built-in policy declares.
func Declared(k abi.Kind, name string) ([]abi.Param, error) {
	p := policy.Builtin(k, name)
	if p == nil {
		return nil, fmt.Errorf("tune: %s policy %q is not a built-in (have %s)", k, name, strings.Join(policy.BuiltinNames(k), ", "))
	}
	d, ok := p.(abi.ParamDeclarer)
	if !ok || len(d.Params()) == 0 {
		return nil, fmt.Errorf("tune: %s policy %s declares no tunable parameters", k, name)
	}
	return d.Params(), nil
}

// WithPolicy returns cfg running policy name for kind k with params set.
func WithPolicy(cfg sim.Config, k abi.Kind, name string, params map[string]float64) sim.Config {
	switch k {
	case abi.KindEviction:
		cfg.Policies.Eviction = name
	case abi.KindScheduling:
		cfg.Policies.Scheduling = name
	case abi.KindBatching:
		cfg.Policies.Batching = name
	case abi.KindBalancing:
		cfg.Policies.Balancing = name
	}
	all := make(map[string]map[string]float64, len(cfg.Params)+1)
	for kk, v := range cfg.Params {
		all[kk] = v
	}
	all[k.String()] = params
	cfg.Params = all
	return cfg
}

// Score is the objective's value for a report; lower is better. Search
// adds a penalty for jobs failed beyond the defaults' run.
func Score(objective string, r *sim.Report) (float64, error) {
	var v float64
	switch objective {
	case "", ObjectiveMeanLatency:
		v = r.MeanLatencyS
	case ObjectiveP95Latency:
		v = r.P95LatencyS
	case ObjectiveP99Latency:
		v = r.P99LatencyS
	case ObjectiveSLOMiss:
		v = 1 - r.SLOAttainment
	case ObjectiveLoadTime:
		v = r.TotalLoadTimeS
	default:
		return 0, fmt.Errorf("tune: unknown objective %q (have %s)", objective, strings.Join(Objectives, ", "))
	}
	return v, nil
}

// Evaluate runs the simulator once with kind k's policy name at params and
// scores the report.
func Evaluate(ctx context.Context, cfg sim.Config, models []sim.Model, trace *sim.Trace, k abi.Kind, name string, params map[string]float64, objective string, wall clock.Clock) (float64, *sim.Report, error) {
	rep, err := sim.Run(ctx, WithPolicy(cfg, k, name, params), models, trace, sim.Options{Wall: wall})
	if err != nil {
		return 0, nil, err
	}
	s, err := Score(objective, rep)
	return s, rep, err
}

// dim is one searched parameter with the transform its values are drawn
// and stepped in: log for wide non-negative ranges, so that 10 ms and 10 s
// are both reachable.
type dim struct {
	p   abi.Param
	log bool
}

func newDim(p abi.Param) dim {
	wide := p.Type != abi.ParamBool && p.Min >= 0 && (p.Max+1)/(p.Min+1) >= 100
	return dim{p: p, log: wide}
}

func (d dim) toU(x float64) float64 {
	if d.log {
		return (math.Log1p(x) - math.Log1p(d.p.Min)) / (math.Log1p(d.p.Max) - math.Log1p(d.p.Min))
	}
	if d.p.Max == d.p.Min {
		return 0
	}
	return (x - d.p.Min) / (d.p.Max - d.p.Min)
}

func (d dim) fromU(u float64) float64 {
	u = math.Max(0, math.Min(1, u))
	var x float64
	if d.log {
		x = math.Expm1(math.Log1p(d.p.Min) + u*(math.Log1p(d.p.Max)-math.Log1p(d.p.Min)))
	} else {
		x = d.p.Min + u*(d.p.Max-d.p.Min)
	}
	if d.p.Type != abi.ParamFloat {
		x = math.Round(x)
	}
	return math.Max(d.p.Min, math.Min(d.p.Max, x))
}

// Search looks for the parameters of kind k's built-in policy name that
// minimise the objective on trace, within opts.Budget simulator runs.
func Search(ctx context.Context, cfg sim.Config, models []sim.Model, trace *sim.Trace, k abi.Kind, name string, opts Options) (*Result, error) {
	declared, err := Declared(k, name)
	if err != nil {
		return nil, err
	}
	if opts.Budget == 0 {
		opts.Budget = DefaultBudget
	}
	if opts.Budget < 2 {
		return nil, fmt.Errorf("tune: budget %d: need at least 2 simulator runs", opts.Budget)
	}
	if opts.Objective == "" {
		opts.Objective = ObjectiveMeanLatency
	}
	if !slices.Contains(Objectives, opts.Objective) {
		return nil, fmt.Errorf("tune: unknown objective %q (have %s)", opts.Objective, strings.Join(Objectives, ", "))
	}
	var dims []dim
	for _, p := range declared {
		if len(opts.Params) == 0 || slices.Contains(opts.Params, p.Name) {
			dims = append(dims, newDim(p))
		}
	}
	for _, n := range opts.Params {
		if !slices.ContainsFunc(declared, func(p abi.Param) bool { return p.Name == n }) {
			return nil, fmt.Errorf("tune: %s policy %s declares no parameter %q", k, name, n)
		}
	}
	res := &Result{Kind: k.String(), Policy: name, Objective: opts.Objective, Budget: opts.Budget, Seed: opts.Seed,
		Declared: declared, Defaults: map[string]float64{}}
	for _, p := range declared {
		res.Defaults[p.Name] = p.Default
	}
	seen := map[string]float64{}
	point := func(xs []float64) map[string]float64 {
		m := make(map[string]float64, len(declared))
		for _, p := range declared {
			m[p.Name] = p.Default
		}
		for i, d := range dims {
			m[d.p.Name] = xs[i]
		}
		return m
	}
	key := func(xs []float64) string {
		parts := make([]string, len(xs))
		for i, x := range xs {
			parts[i] = strconv.FormatFloat(x, 'g', 10, 64)
		}
		return strings.Join(parts, ",")
	}
	var best []float64
	bestScore := math.Inf(1)
	defaultFailed := -1
	// try runs one point unless it was run before; ok is false when the
	// budget is spent.
	try := func(xs []float64, phase string) (score float64, ok bool, err error) {
		if s, done := seen[key(xs)]; done {
			return s, true, nil
		}
		if len(res.Trials) >= opts.Budget {
			return 0, false, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, false, err
		}
		params := point(xs)
		s, rep, err := Evaluate(ctx, cfg, models, trace, k, name, params, opts.Objective, opts.Wall)
		if err != nil {
			return 0, false, err
		}
		if defaultFailed < 0 {
			defaultFailed = rep.Failed
		}
		s += failedPenalty * float64(max(0, rep.Failed-defaultFailed))
		seen[key(xs)] = s
		res.Trials = append(res.Trials, Trial{Params: params, Score: s, Phase: phase, MeanLatencyS: rep.MeanLatencyS,
			P95LatencyS: rep.P95LatencyS, SLOAttainment: rep.SLOAttainment, LoadTimeS: rep.TotalLoadTimeS, Failed: rep.Failed})
		if s < bestScore {
			bestScore, best = s, slices.Clone(xs)
		}
		return s, true, nil
	}

	defaults := make([]float64, len(dims))
	for i, d := range dims {
		defaults[i] = d.p.Default
	}
	if _, _, err := try(defaults, "defaults"); err != nil {
		return nil, err
	}
	res.DefaultScore = bestScore

	// Random phase: half the remaining budget.
	rng := rand.New(rand.NewPCG(opts.Seed, 0x6b696c6e74756e65))
	random := (opts.Budget - 1) / 2
	for i := 0; i < random*4 && len(res.Trials) < 1+random; i++ { // repeats of a small space are skipped
		xs := make([]float64, len(dims))
		for j, d := range dims {
			xs[j] = d.fromU(rng.Float64())
		}
		if _, ok, err := try(xs, "random"); err != nil {
			return nil, err
		} else if !ok {
			break
		}
	}

	// Coordinate refinement around the best point, halving the steps when
	// a whole pass finds nothing better.
	steps := make([]float64, len(dims))
	for i := range steps {
		steps[i] = 0.25
	}
	for len(res.Trials) < opts.Budget {
		improved, moved := false, false
		for i, d := range dims {
			if steps[i] < 1e-3 {
				continue
			}
			for _, dir := range []float64{1, -1} {
				xs := slices.Clone(best)
				xs[i] = d.fromU(d.toU(best[i]) + dir*steps[i])
				if xs[i] == best[i] {
					continue
				}
				moved = true
				before := bestScore
				if _, ok, err := try(xs, "refine"); err != nil {
					return nil, err
				} else if !ok {
					break
				}
				if bestScore < before {
					improved = true
					break
				}
			}
		}
		if !improved {
			done := true
			for i := range steps {
				steps[i] /= 2
				if steps[i] >= 1e-3 {
					done = false
				}
			}
			if done || (!moved && allInt(dims, steps)) {
				break
			}
		}
	}
	res.Best, res.BestScore = point(best), bestScore
	if res.DefaultScore > 0 && bestScore < res.DefaultScore {
		res.Gain = (res.DefaultScore - bestScore) / res.DefaultScore
	}
	return res, nil
}

// allInt reports whether every step is below what an integer parameter can
// still move: a further halving would only retry points already run.
func allInt(dims []dim, steps []float64) bool {
	for i, d := range dims {
		if d.p.Type == abi.ParamFloat || steps[i]*(d.p.Max-d.p.Min) >= 1 || d.log {
			return false
		}
	}
	return true
}

// WriteMarkdown writes the result as the table `kiln sim --tune` prints.
func (r *Result) WriteMarkdown(w io.Writer) error {
	if r == nil {
		return errors.New("tune: no result")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## Tuning %s policy %s (objective %s, %d simulator runs)\n\n", r.Kind, r.Policy, r.Objective, len(r.Trials))
	b.WriteString("| parameter | min | max | default | best |\n|---|---:|---:|---:|---:|\n")
	for _, p := range r.Declared {
		fmt.Fprintf(&b, "| %s | %g | %g | %g | %g |\n", p.Name, p.Min, p.Max, r.Defaults[p.Name], r.Best[p.Name])
	}
	fmt.Fprintf(&b, "\n| | %s |\n|---|---:|\n| defaults | %.4g |\n| best | %.4g |\n| gain | %.1f%% |\n",
		r.Objective, r.DefaultScore, r.BestScore, 100*r.Gain)
	_, err := io.WriteString(w, b.String())
	return err
}
