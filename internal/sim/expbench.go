package sim

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/experiment"
)

// ExperimentWorkload describes the workloads the experiments' error rates
// are checked on (issue 14): on/off bursty arrivals (exponential periods of
// several minutes at ×1.8 and ×0.3 of the mean rate), Zipf(0.9)
// popularity over about fifty models whose favourite changes every ~40
// minutes, and 30% interactive jobs with a 30 s deadline.
type ExperimentWorkload struct {
	// Load is the mean arrival rate as a fraction of the node's capacity
	// (Capacity jobs/s).
	Load float64
	// Capacity is the node's sustainable rate on this mix, in jobs/s.
	Capacity float64
	// Span is the trace's length.
	Span time.Duration
	// Seed seeds the trace.
	Seed uint64
}

// Experiment workload shape: equal mean on and off periods, so the mean of
// the burst and lull factors is what the trace's rate is divided by.
const (
	expOn, expOff       = 5 * time.Minute, 5 * time.Minute
	expBurst, expLull   = 1.8, 0.3
	expCheckpoints      = 30 // + the catalog's LoRAs, VAEs, ControlNets, upscaler ≈ 50 models
	expZipf             = 0.9
	expDrift            = 40 * time.Minute
	expInteractive      = 0.3
	expDeadlineMS       = 30000
	expMeanFactor       = (expBurst + expLull) / 2
	expDefaultSpan      = 2 * time.Hour
	expDefaultKilnCapHz = 0.95
)

// Generate returns the workload's catalog and trace.
func (w ExperimentWorkload) Generate() ([]Model, []Request, error) {
	if w.Span == 0 {
		w.Span = expDefaultSpan
	}
	if w.Capacity == 0 {
		w.Capacity = expDefaultKilnCapHz
	}
	rate := w.Load * w.Capacity
	if !(rate > 0) {
		return nil, nil, fmt.Errorf("sim: experiment workload: load %v × capacity %v is not a rate", w.Load, w.Capacity)
	}
	jobs := int(math.Round(rate * w.Span.Seconds()))
	return Generate(GenConfig{Kind: KindBursty, Jobs: jobs, Rate: rate / expMeanFactor, BurstFactor: expBurst, BurstLow: expLull,
		On: expOn, Off: expOff, Checkpoints: expCheckpoints, ZipfS: expZipf, Drift: expDrift,
		InteractiveFrac: expInteractive, DeadlineMS: expDeadlineMS, Seed: w.Seed})
}

// ExperimentTrial is one canary (or A/B test, or switchback) of the
// experiments' error-rate check: a workload, a node and a spec.
type ExperimentTrial struct {
	Workload ExperimentWorkload
	// Node is the simulated node; its Policies are the active policies
	// (the baseline).
	Node Config
	// Spec is the experiment.
	Spec experiment.Spec
	// Config is the experiments section (zero: the defaults).
	Config experiment.Config
	// Seed seeds the split.
	Seed uint64
}

// Run runs the trial and returns the experiment's outcome.
func (t ExperimentTrial) Run(ctx context.Context) (*CanaryReport, error) {
	models, reqs, err := t.Workload.Generate()
	if err != nil {
		return nil, err
	}
	rep, err := Run(ctx, t.Node, models, &Trace{Requests: reqs},
		Options{Wall: clock.NewFake(time.Unix(0, 0)), Seed: int64(t.Seed), Canary: &Canary{Spec: t.Spec, Config: t.Config, Seed: t.Seed}})
	if err != nil {
		return nil, err
	}
	if rep.Canary == nil {
		return nil, fmt.Errorf("sim: trial: no experiment in the report")
	}
	return rep.Canary, nil
}
