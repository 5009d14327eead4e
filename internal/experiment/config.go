package experiment

import (
	"errors"
	"fmt"
	"time"

	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Config is the experiments section of kiln's config: the defaults of an
// experiment's spec and how often the controller looks.
type Config struct {
	// Steps are a canary's default candidate shares, in percent.
	Steps []int `koanf:"steps"`
	// StepDuration is the least time a canary step lasts.
	StepDuration time.Duration `koanf:"step_duration"`
	// MinSamples is the fewest jobs per arm before a verdict.
	MinSamples int `koanf:"min_samples"`
	// Deadline bounds an experiment (a stalled canary is rolled back).
	Deadline time.Duration `koanf:"deadline"`
	// Confidence is 1 − alpha of every test.
	Confidence float64 `koanf:"confidence"`
	// Window and BurnIn are a switchback's defaults.
	Window time.Duration `koanf:"window"`
	BurnIn time.Duration `koanf:"burn_in"`
	// Guards are a canary's default guards.
	Guards []string `koanf:"guards"`
	// MinEffect is the smallest latency difference, as a fraction of the
	// baseline's mean, that a canary acts on; MinRateEffect the smallest
	// difference of an error or deadline-miss rate.
	MinEffect     float64 `koanf:"min_effect"`
	MinRateEffect float64 `koanf:"min_rate_effect"`
	// MaxRegression is the latency regression, as a fraction of the
	// baseline's mean, that a canary must rule out before it promotes:
	// its last step with a baseline holds until the upper end of the
	// latency test's confidence set is below this (a non-inferiority
	// test at the experiment's confidence). A canary that cannot get
	// there by its deadline ends inconclusive.
	MaxRegression float64 `koanf:"max_regression"`
	// PairWindow is the width of the time windows whose per-arm means a
	// canary's and an A/B test's gating tests pair (RATIONALE.md): wide
	// enough that a window holds jobs of both arms, narrow enough that
	// the two saw the same bursts. A test needs about twenty windows.
	PairWindow time.Duration `koanf:"pair_window"`
	// Interval is how often the controller looks at a running experiment.
	Interval time.Duration `koanf:"interval"`
	// History is how many finished experiments the record keeps.
	History int `koanf:"history"`
	// Shadow is the eviction shadow's section (internal/shadow): which
	// eviction policies the ghost caches replay live traffic under.
	Shadow ShadowConfig `koanf:"shadow"`
	// Watch is how changes made by hand are watched and rolled back when
	// they hurt (watch.go).
	Watch WatchConfig `koanf:"watch"`
}

// DefaultConfig is the section's defaults, as configs/kiln.yaml has them.
func DefaultConfig() Config {
	return Config{
		Steps: []int{5, 25, 50, 100}, StepDuration: 5 * time.Minute, MinSamples: 50, Deadline: 2 * time.Hour,
		Confidence: 0.98, Window: 10 * time.Minute, BurnIn: time.Minute, Guards: []string{"faults==0"},
		Interval: 10 * time.Second, History: 100, MinEffect: 0.1, MinRateEffect: 0.02, MaxRegression: 0.2, PairWindow: pairWindow,
	}
}

// WithDefaults fills zero fields from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if len(c.Steps) == 0 {
		c.Steps = d.Steps
	}
	if c.StepDuration == 0 {
		c.StepDuration = d.StepDuration
	}
	if c.MinSamples == 0 {
		c.MinSamples = d.MinSamples
	}
	if c.Deadline == 0 {
		c.Deadline = d.Deadline
	}
	if c.Confidence == 0 {
		c.Confidence = d.Confidence
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.BurnIn == 0 {
		c.BurnIn = d.BurnIn
	}
	if c.Guards == nil {
		c.Guards = d.Guards
	}
	if c.MinEffect == 0 {
		c.MinEffect = d.MinEffect
	}
	if c.MinRateEffect == 0 {
		c.MinRateEffect = d.MinRateEffect
	}
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.PairWindow == 0 {
		c.PairWindow = d.PairWindow
	}
	if c.MaxRegression == 0 {
		c.MaxRegression = d.MaxRegression
	}
	if c.History == 0 {
		c.History = d.History
	}
	return c
}

// Validate checks the section, defaults filled.
func (c Config) Validate() error {
	c = c.WithDefaults()
	s := Spec{Kind: "scheduling", Policy: "fifo", Type: Canary}.withDefaults(c)
	var errs []error
	if err := s.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("experiments: %w", err))
	}
	if c.BurnIn >= c.Window {
		errs = append(errs, fmt.Errorf("experiments.burn_in (%s) must be shorter than experiments.window (%s)", c.BurnIn, c.Window))
	}
	if c.PairWindow < 100*time.Millisecond || c.PairWindow > time.Hour {
		errs = append(errs, fmt.Errorf("experiments.pair_window %s: want between 100ms and 1h", c.PairWindow))
	}
	if c.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("experiments.interval %s: want at least 10ms", c.Interval))
	}
	if c.MinEffect < 0 || c.MinEffect > 10 || c.MinRateEffect < 0 || c.MinRateEffect > 1 {
		errs = append(errs, errors.New("experiments.min_effect must be in [0, 10] and experiments.min_rate_effect in [0, 1]"))
	}
	if c.History < 1 {
		errs = append(errs, errors.New("experiments.history: want at least 1"))
	}
	if err := c.Shadow.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Watch.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ShadowConfig is the experiments.shadow section: the eviction policies
// internal/shadow evaluates in ghost caches beside the live ones. It lives
// here, with the section it is nested in, so that this package need not
// import the shadow.
type ShadowConfig struct {
	// Policies are the eviction policies to shadow, by name ("gdsf") or
	// version ("my-policy@2"). Empty means every built-in eviction policy.
	// Set it to ["off"] to turn the shadow off.
	Policies []string `koanf:"policies"`
	// Routing are the routing policies a node of a cluster puts every job
	// it routes to, by name or version (RoutingShadow). Empty means every
	// built-in routing policy; ["off"] turns the routing shadow off.
	Routing []string `koanf:"routing"`
}

// Enabled reports whether the shadow should run.
func (c ShadowConfig) Enabled() bool { return !(len(c.Policies) == 1 && c.Policies[0] == "off") }

// RoutingEnabled reports whether the routing shadow should run (in a
// cluster).
func (c ShadowConfig) RoutingEnabled() bool { return !(len(c.Routing) == 1 && c.Routing[0] == "off") }

// RoutingPolicies are the routing shadow's candidates: Routing, or every
// built-in routing policy.
func (c ShadowConfig) RoutingPolicies() []string {
	if len(c.Routing) == 0 {
		return policy.BuiltinNames(abi.KindRouting)
	}
	return c.Routing
}

// Validate checks the names' syntax; whether a non-built-in is loaded is
// only known at run time (it is then reported faulted).
func (c ShadowConfig) Validate() error {
	var errs []error
	if c.Enabled() {
		for _, p := range c.Policies {
			if _, _, err := policy.ParseRef(p); err != nil {
				errs = append(errs, fmt.Errorf("experiments.shadow.policies: %w", err))
			}
		}
	}
	if c.RoutingEnabled() {
		for _, p := range c.Routing {
			if _, _, err := policy.ParseRef(p); err != nil {
				errs = append(errs, fmt.Errorf("experiments.shadow.routing: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}
