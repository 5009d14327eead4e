package experiment

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Type is how an experiment splits its arms and ends.
type Type string

// The experiment types.
const (
	// Canary moves the candidate through steps of workers or traffic,
	// each gated by guards and by the comparison with the baseline, and
	// promotes it at the end or rolls it back.
	Canary Type = "canary"
	// AB runs both arms side by side for its duration, by worker group or
	// traffic share, and reports a verdict; it changes no policy.
	AB Type = "ab"
	// Switchback alternates whole time windows between the arms,
	// discarding each window's burn-in, and reports a verdict.
	Switchback Type = "switchback"
)

// Unit is what a canary's or an A/B test's share counts.
type Unit string

// The units of a share.
const (
	// Workers splits the node's workers into two groups: each group's
	// decisions follow its arm and its jobs count for its arm. Jobs of
	// different arms never share a worker, so they interfere only through
	// the shared tiers and devices.
	Workers Unit = "workers"
	// Traffic sends each decision to the candidate with the share's
	// probability, from the experiment's seeded generator.
	Traffic Unit = "traffic"
	// Windows is the unit of a switchback.
	Windows Unit = "windows"
)

// Duration is a time.Duration that JSON spells "30s" (a bare number is
// seconds).
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "30s" or 30.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e9 {
		return fmt.Errorf("duration: want a string such as \"30s\" or a number of seconds, got %s", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// Spec is what an operator asks for. Zero fields take the defaults of the
// experiments config section when the experiment starts.
type Spec struct {
	// Kind is the policy kind: scheduling, batching, balancing, eviction
	// (by whole devices or by switchback: each device's VRAM is one cache,
	// while the host tiers stay the active policy's; the shadow caches
	// compare eviction policies on the same requests without an
	// experiment), or routing by job or switchback, in a cluster
	// (route.go).
	Kind string `json:"kind"`
	// Policy is the candidate, "name" or "name@version".
	Policy string `json:"policy"`
	// Params set some of the candidate's declared parameters (a tuned
	// candidate): the candidate arm runs a private copy of the version with
	// these values, and promotion activates the version and sets them.
	Params map[string]float64 `json:"params,omitempty"`
	// Baseline is the baseline arm; empty means the active policy.
	Baseline string `json:"baseline,omitempty"`
	Type     Type   `json:"type"`
	// Unit is workers or traffic (canary and ab); empty chooses workers
	// split by whole devices for balancing on nodes of four devices or
	// more (traffic below), traffic for routing, and workers for
	// scheduling and batching when the node has at least two workers.
	// An eviction canary or A/B test must ask for workers: it splits whole
	// devices, and below a canary's 100% step it compares what each arm's
	// policy evicts from its devices' VRAM only, since the host tiers and
	// the lookahead's prefetches into them are shared by every device and
	// stay the active policy's (a switchback compares those too).
	Unit Unit `json:"unit,omitempty"`
	// Steps are a canary's candidate shares in percent, increasing; the
	// last is usually 100, a step with no baseline left that is gated by
	// the guards alone before promotion.
	Steps []int `json:"steps,omitempty"`
	// Share is an A/B test's candidate share in percent.
	Share int `json:"share,omitempty"`
	// Guards are absolute limits on the candidate arm ("p95<=30s",
	// "error_rate<=0.01", "faults==0") or on its ratio to the baseline
	// ("ratio_p95<=1.2"); a trailing "!" makes one critical.
	Guards []string `json:"guards,omitempty"`
	// StepDuration is the least time a canary step lasts.
	StepDuration Duration `json:"step_duration,omitempty"`
	// MinSamples is the fewest jobs per arm and metric before any verdict
	// but insufficient data.
	MinSamples int `json:"min_samples,omitempty"`
	// Deadline bounds the whole experiment: a canary still running then
	// is rolled back (stalled), an A/B test or switchback ends with what
	// it has.
	Deadline Duration `json:"deadline,omitempty"`
	// Window and BurnIn shape a switchback: the arm changes every Window,
	// and jobs dispatched in a window's first BurnIn are not counted.
	Window Duration `json:"window,omitempty"`
	BurnIn Duration `json:"burn_in,omitempty"`
	// Confidence is 1 − alpha of every test.
	Confidence float64 `json:"confidence,omitempty"`
	// Seed makes the split reproducible; 0 takes one from the node's
	// generator, and the seed used is recorded.
	Seed uint64 `json:"seed,omitempty"`
}

// withDefaults fills zero fields from the config.
func (s Spec) withDefaults(c Config) Spec {
	if len(s.Steps) == 0 && s.Type == Canary {
		s.Steps = slices.Clone(c.Steps)
	}
	if s.Share == 0 && s.Type == AB {
		s.Share = 50
	}
	if s.StepDuration == 0 {
		s.StepDuration = Duration(c.StepDuration)
	}
	if s.MinSamples == 0 {
		s.MinSamples = c.MinSamples
	}
	if s.Deadline == 0 {
		s.Deadline = Duration(c.Deadline)
	}
	if s.Window == 0 && s.Type == Switchback {
		s.Window = Duration(c.Window)
	}
	if s.BurnIn == 0 && s.Type == Switchback {
		s.BurnIn = Duration(c.BurnIn)
	}
	if s.Confidence == 0 {
		s.Confidence = c.Confidence
	}
	if s.Type == Switchback {
		s.Unit = Windows
	}
	if len(s.Guards) == 0 && s.Type == Canary {
		s.Guards = slices.Clone(c.Guards)
	}
	return s
}

// Validate checks a spec after its defaults are filled.
func (s Spec) Validate() error {
	var errs []error
	k, err := abi.ParseKind(s.Kind)
	if err != nil {
		errs = append(errs, err)
	}
	if _, _, err := policy.ParseRef(s.Policy); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}
	if s.Baseline != "" {
		if _, _, err := policy.ParseRef(s.Baseline); err != nil {
			errs = append(errs, fmt.Errorf("baseline: %w", err))
		}
	}
	switch s.Type {
	case Canary, AB, Switchback:
	default:
		errs = append(errs, fmt.Errorf("type %q: want canary, ab or switchback", s.Type))
	}
	if k == abi.KindRouting && s.Unit == Workers {
		// A routing policy decides once per job, for the whole cluster:
		// its arms split jobs, never one node's workers (route.go).
		errs = append(errs, errors.New("a routing experiment splits jobs, not workers: use unit traffic (each job is routed by its arm) or a switchback"))
	}
	if k == abi.KindEviction && s.Type != Switchback && s.Unit != Workers {
		// Every job of a traffic split may run on any device, so both
		// arms' jobs would load into caches either arm's evictor keeps.
		errs = append(errs, errors.New("an eviction experiment splits whole devices (unit workers: each device's VRAM is evicted by its arm's policy) "+
			"or time (a switchback); a traffic split shares every cache between the arms"))
	}
	switch s.Unit {
	case "", Workers, Traffic:
		if s.Type == Switchback && s.Unit != "" {
			errs = append(errs, errors.New("a switchback's unit is windows"))
		}
	case Windows:
		if s.Type != Switchback {
			errs = append(errs, errors.New("unit windows is a switchback's; use type switchback"))
		}
	default:
		errs = append(errs, fmt.Errorf("unit %q: want workers or traffic", s.Unit))
	}
	if s.Type == Canary {
		if len(s.Steps) == 0 || len(s.Steps) > 20 {
			errs = append(errs, errors.New("steps: want 1 to 20 percentages"))
		}
		for i, p := range s.Steps {
			if p < 1 || p > 100 || i > 0 && p <= s.Steps[i-1] {
				errs = append(errs, fmt.Errorf("steps %v: want increasing percentages in 1..100", s.Steps))
				break
			}
		}
	}
	if s.Type == AB && (s.Share < 1 || s.Share > 99) {
		errs = append(errs, fmt.Errorf("share %d: want 1..99 percent", s.Share))
	}
	for _, g := range s.Guards {
		if _, err := ParseGuard(g); err != nil {
			errs = append(errs, err)
		}
	}
	if len(s.Params) > 64 {
		errs = append(errs, errors.New("params: at most 64"))
	}
	for name, v := range s.Params {
		if name == "" || math.IsNaN(v) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("params: %q = %v is not a named finite number", name, v))
		}
	}
	if len(s.Guards) > 32 {
		errs = append(errs, errors.New("guards: at most 32"))
	}
	if s.StepDuration < 0 || s.Deadline <= 0 || s.Window < 0 || s.BurnIn < 0 {
		errs = append(errs, errors.New("durations must be positive"))
	}
	if s.Type == Switchback && (s.Window <= 0 || s.BurnIn >= s.Window) {
		errs = append(errs, fmt.Errorf("switchback: window (%s) must be positive and longer than burn_in (%s)",
			time.Duration(s.Window), time.Duration(s.BurnIn)))
	}
	if s.MinSamples < 1 || s.MinSamples > 1_000_000 {
		errs = append(errs, fmt.Errorf("min_samples %d: want 1..1000000", s.MinSamples))
	}
	if !(s.Confidence > 0.5 && s.Confidence < 1) {
		errs = append(errs, fmt.Errorf("confidence %v: want a number in (0.5, 1)", s.Confidence))
	}
	return errors.Join(errs...)
}

// kind is the parsed Kind; Validate has checked it.
func (s Spec) kind() abi.Kind { k, _ := abi.ParseKind(s.Kind); return k }

// ParseSteps parses "5,25,50,100".
func ParseSteps(s string) ([]int, error) {
	var out []int
	for f := range splitComma(s) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("steps %q: %q is not a whole percentage", s, f)
		}
		out = append(out, p)
	}
	return out, nil
}
