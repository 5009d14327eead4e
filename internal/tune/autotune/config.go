// Package autotune is the tune section of kiln's config: whether the node
// tunes its own policies (tune.auto), how often, and how hard a candidate
// must win before it is canaried.
//
// It is a package of its own only to break an import cycle: internal/config
// assembles every section's type, and the tuner (internal/tune) runs the
// simulator, which reads internal/config. The loop that uses this section is
// tune.Auto.
//
//	cfg := autotune.DefaultConfig() // auto: false
//	cfg.Auto = true
//	err := cfg.WithDefaults().Validate()
package autotune

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/experiment"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Objectives are the names of what a search can minimise; internal/tune
// defines what each one reads from a simulator report.
var Objectives = []string{"mean_latency", "p95_latency", "p99_latency", "slo_miss", "load_time"}

// CanaryKinds are the policy kinds a canary can run (internal/experiment):
// an eviction policy is compared live only by the eviction shadow and by
// switchbacks, which change no policy, so the tuner does not touch it.
var CanaryKinds = []string{"scheduling", "batching", "balancing"}

// Config is the tune section.
type Config struct {
	// Auto turns the background tuner on. Off by default: a node changes
	// its own policies only when its operator asked for it.
	Auto bool `koanf:"auto" json:"auto"`
	// Interval is the time between two tuning runs (the first runs one
	// interval after start, so that there are arrivals to tune on).
	Interval time.Duration `koanf:"interval" json:"interval"`
	// Budget is the number of simulator runs one tuning run may spend on
	// searching, shared by every (kind, policy) it searches; the hold-out
	// validation of each kind's finalist comes on top (2 × (Repeats+1)
	// runs).
	Budget int `koanf:"budget" json:"budget"`
	// Kinds are the policy kinds tuned, of scheduling, batching and
	// balancing.
	Kinds []string `koanf:"kinds" json:"kinds"`
	// TryBuiltins also searches the other built-in policies of each kind,
	// not only the active one's parameters.
	TryBuiltins bool `koanf:"try_builtins" json:"try_builtins"`
	// MinArrivals is the fewest recorded arrivals a run tunes on; with
	// fewer, the run is skipped.
	MinArrivals int `koanf:"min_arrivals" json:"min_arrivals"`
	// MaxArrivals bounds the recorded arrivals a run uses (the most
	// recent), which bounds a run's simulator time.
	MaxArrivals int `koanf:"max_arrivals" json:"max_arrivals"`
	// Holdout is the fraction of the arrivals, the most recent ones, that
	// the search never sees and that validates its winner.
	Holdout float64 `koanf:"holdout" json:"holdout"`
	// Repeats is how many consecutive blocks the hold-out is cut into;
	// the spread of the winner's gain across them is the noise its gain
	// must clear.
	Repeats int `koanf:"repeats" json:"repeats"`
	// Margin is the smallest relative gain on the hold-out, beyond the
	// noise, that is worth a canary.
	Margin float64 `koanf:"margin" json:"margin"`
	// Objective is what the search minimises (see Objectives).
	Objective string `koanf:"objective" json:"objective"`
	// Timeout bounds one tuning run's wall time; a run past it ends
	// without a canary.
	Timeout time.Duration `koanf:"timeout" json:"timeout"`
	// Guards are the canary's guards; empty takes experiments.guards.
	Guards []string `koanf:"guards" json:"guards"`
}

// DefaultConfig is the section's defaults, as configs/kiln.yaml has them.
func DefaultConfig() Config {
	return Config{
		Interval: 6 * time.Hour, Budget: 48, Kinds: slices.Clone(CanaryKinds), MinArrivals: 500, MaxArrivals: 10000,
		Holdout: 0.3, Repeats: 4, Margin: 0.05, Objective: "mean_latency", Timeout: 10 * time.Minute,
	}
}

// WithDefaults fills zero fields from DefaultConfig. Auto and TryBuiltins
// stay as set: false is their default.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.Budget == 0 {
		c.Budget = d.Budget
	}
	if c.Kinds == nil {
		c.Kinds = d.Kinds
	}
	if c.MinArrivals == 0 {
		c.MinArrivals = d.MinArrivals
	}
	if c.MaxArrivals == 0 {
		c.MaxArrivals = d.MaxArrivals
	}
	if c.Holdout == 0 {
		c.Holdout = d.Holdout
	}
	if c.Repeats == 0 {
		c.Repeats = d.Repeats
	}
	if c.Margin == 0 {
		c.Margin = d.Margin
	}
	if c.Objective == "" {
		c.Objective = d.Objective
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	return c
}

// Validate checks the section, defaults filled.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Interval < time.Second {
		errs = append(errs, fmt.Errorf("tune.interval %s: want at least 1s", c.Interval))
	}
	if c.Budget < 2 {
		errs = append(errs, fmt.Errorf("tune.budget %d: want at least 2 simulator runs", c.Budget))
	}
	if len(c.Kinds) == 0 {
		errs = append(errs, errors.New("tune.kinds: want at least one of "+strings.Join(CanaryKinds, ", ")))
	}
	for _, k := range c.Kinds {
		if _, err := abi.ParseKind(k); err != nil {
			errs = append(errs, fmt.Errorf("tune.kinds: %w", err))
		} else if !slices.Contains(CanaryKinds, k) {
			errs = append(errs, fmt.Errorf("tune.kinds: %s cannot be canaried (want %s)", k, strings.Join(CanaryKinds, ", ")))
		}
	}
	if c.MinArrivals < 20 {
		errs = append(errs, fmt.Errorf("tune.min_arrivals %d: want at least 20", c.MinArrivals))
	}
	if c.MaxArrivals < c.MinArrivals {
		errs = append(errs, fmt.Errorf("tune.max_arrivals %d: want at least tune.min_arrivals (%d)", c.MaxArrivals, c.MinArrivals))
	}
	if c.Holdout < 0.1 || c.Holdout > 0.9 {
		errs = append(errs, fmt.Errorf("tune.holdout %g: want a fraction in [0.1, 0.9]", c.Holdout))
	}
	if c.Repeats < 2 || c.Repeats > 20 {
		errs = append(errs, fmt.Errorf("tune.repeats %d: want 2 to 20 blocks (the noise needs at least two)", c.Repeats))
	}
	if c.Margin < 0 || c.Margin >= 1 {
		errs = append(errs, fmt.Errorf("tune.margin %g: want a fraction in [0, 1)", c.Margin))
	}
	if !slices.Contains(Objectives, c.Objective) {
		errs = append(errs, fmt.Errorf("tune.objective %q: want one of %s", c.Objective, strings.Join(Objectives, ", ")))
	}
	if c.Timeout < time.Second {
		errs = append(errs, fmt.Errorf("tune.timeout %s: want at least 1s", c.Timeout))
	}
	for _, g := range c.Guards {
		if _, err := experiment.ParseGuard(g); err != nil {
			errs = append(errs, fmt.Errorf("tune.guards: %w", err))
		}
	}
	return errors.Join(errs...)
}
