package sim

import (
	"context"
	"strings"
	"testing"
)

func TestParams(t *testing.T) {
	models, reqs, err := Generate(GenConfig{Jobs: 60, Rate: 2, Checkpoints: 4, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	cfg := node(1, 1, 24<<30, "lru")
	cfg.Policies.Batching = "same-model"
	base := run(t, cfg, models, reqs)
	// One job per batch is the same as no batching: the report must move.
	cfg.Params = map[string]map[string]float64{"batching": {"max_size": 1}}
	single := run(t, cfg, models, reqs)
	if base.P95LatencyS == single.P95LatencyS && base.MeanLatencyS == single.MeanLatencyS {
		t.Errorf("max_size=1 changed nothing: %v vs %v", base.MeanLatencyS, single.MeanLatencyS)
	}
	for _, p := range []map[string]map[string]float64{
		{"batching": {"max_size": 1000}}, // out of bounds
		{"batching": {"nope": 1}},
		{"weather": {"max_size": 1}},
	} {
		cfg.Params = p
		_, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{Wall: fakeWall()})
		if err == nil || !strings.Contains(err.Error(), "params") {
			t.Errorf("%v: err = %v", p, err)
		}
	}
}
