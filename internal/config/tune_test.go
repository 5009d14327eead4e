package config

import (
	"strings"
	"testing"
	"time"
)

// TestTuneSection: the background tuner is off in the embedded default,
// and the live test's --set overrides turn it on.
func TestTuneSection(t *testing.T) {
	cfg, err := Load(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tune.Auto || cfg.Tune.TryBuiltins || len(cfg.Tune.Kinds) != 3 || cfg.Tune.Interval != 6*time.Hour || len(cfg.Tune.Guards) != 0 {
		t.Errorf("default tune section %+v", cfg.Tune)
	}
	cfg, err = Load(LoadOptions{Sets: []string{"tune.auto=true", "tune.interval=2s", "tune.min_arrivals=20", "tune.kinds=[batching]"}})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Tune.Auto || cfg.Tune.Interval != 2*time.Second || cfg.Tune.MinArrivals != 20 || len(cfg.Tune.Kinds) != 1 {
		t.Errorf("overridden tune section %+v", cfg.Tune)
	}
	if _, err := Load(LoadOptions{Sets: []string{"tune.kinds=[eviction]"}}); err == nil || !strings.Contains(err.Error(), "tune.kinds") {
		t.Errorf("eviction cannot be canaried, but loading gave %v", err)
	}
}
