package autotune

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{name: "defaults", edit: func(*Config) {}},
		{name: "on", edit: func(c *Config) { c.Auto, c.TryBuiltins = true, true }},
		{name: "short interval", edit: func(c *Config) { c.Interval = time.Millisecond }, want: "tune.interval"},
		{name: "budget", edit: func(c *Config) { c.Budget = 1 }, want: "tune.budget"},
		{name: "unknown kind", edit: func(c *Config) { c.Kinds = []string{"weather"} }, want: "unknown policy kind"},
		{name: "eviction", edit: func(c *Config) { c.Kinds = []string{"eviction"} }, want: "cannot be canaried"},
		{name: "no kinds", edit: func(c *Config) { c.Kinds = []string{} }, want: "tune.kinds"},
		{name: "few arrivals", edit: func(c *Config) { c.MinArrivals = 5 }, want: "tune.min_arrivals"},
		{name: "max below min", edit: func(c *Config) { c.MinArrivals, c.MaxArrivals = 600, 500 }, want: "tune.max_arrivals"},
		{name: "holdout", edit: func(c *Config) { c.Holdout = 0.95 }, want: "tune.holdout"},
		{name: "repeats", edit: func(c *Config) { c.Repeats = 1 }, want: "tune.repeats"},
		{name: "margin", edit: func(c *Config) { c.Margin = 1 }, want: "tune.margin"},
		{name: "objective", edit: func(c *Config) { c.Objective = "speed" }, want: "tune.objective"},
		{name: "timeout", edit: func(c *Config) { c.Timeout = time.Millisecond }, want: "tune.timeout"},
		{name: "guard", edit: func(c *Config) { c.Guards = []string{"colour<=3"} }, want: "tune.guards"},
		{name: "good guard", edit: func(c *Config) { c.Guards = []string{"faults==0", "ratio_p95<=1.2"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestOffByDefault(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.Auto || c.TryBuiltins {
		t.Errorf("zero config tunes: %+v", c)
	}
	if c.Interval != DefaultConfig().Interval || c.Objective != "mean_latency" || len(c.Kinds) != 3 {
		t.Errorf("defaults not filled: %+v", c)
	}
}
