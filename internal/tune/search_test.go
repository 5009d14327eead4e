package tune

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/sim"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// node is a small simulated node: two 40 GB GPUs, one worker each.
func node() sim.Config {
	c := sim.Config{WorkersPerDevice: 1, Cost: cost.Default(), RAMBytes: 32e9, DiskBytes: 200e9, RemoteBytesPerS: 1e9,
		Policies: policy.Config{NativeBuiltins: true}}
	for i := 0; i < 2; i++ {
		c.Devices = append(c.Devices, device.SimDeviceConfig{Name: "g", MemoryBytes: 40e9, H2DBytesPerS: 20e9, ComputeFactor: 1})
	}
	return c
}

func workload(t testing.TB, g sim.GenConfig) ([]sim.Model, *sim.Trace) {
	t.Helper()
	models, reqs, err := sim.Generate(g)
	if err != nil {
		t.Fatal(err)
	}
	return models, &sim.Trace{Requests: reqs}
}

func wall() clock.Clock { return clock.NewFake(time.Unix(0, 0)) }

// The tuner's claim is that what it finds on one workload is better, not
// just fitted to it: tune on a Zipf workload, then compare the tuned and
// default parameters on a bursty workload from another seed and catalog
// size that the search never saw. Either half can fail.
//
// The load is one where batches pay as the workers run them (one after
// another, the models warm): same-model jobs queue at 1.5 jobs/s on two
// workers, and a larger batch saves their reloads. At 0.5 jobs/s little
// queues, and the defaults were best once batches stopped being charged
// fused.
func TestSearchGainHoldsOnUnseenWorkload(t *testing.T) {
	ctx := context.Background()
	models, train := workload(t, sim.GenConfig{Kind: sim.KindZipf, Jobs: 1000, Rate: 1.5, Checkpoints: 6, Seed: 1})
	res, err := Search(ctx, node(), models, train, abi.KindBatching, "same-model", Options{Budget: 16, Seed: 1, Wall: wall()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("train: defaults %.2f s, best %.2f s (%v), gain %.1f%% in %d runs", res.DefaultScore, res.BestScore, res.Best, 100*res.Gain, len(res.Trials))
	if len(res.Trials) > 16 || res.Trials[0].Phase != "defaults" {
		t.Fatalf("budget or phases wrong: %d trials, first %q", len(res.Trials), res.Trials[0].Phase)
	}
	if res.Gain < 0.03 {
		t.Fatalf("the search found no real gain on its own workload: %.3f", res.Gain)
	}

	models2, holdout := workload(t, sim.GenConfig{Kind: sim.KindBursty, Jobs: 1000, Rate: 1.5, Checkpoints: 9, Seed: 42})
	def, _, err := Evaluate(ctx, node(), models2, holdout, abi.KindBatching, "same-model", res.Defaults, res.Objective, wall())
	if err != nil {
		t.Fatal(err)
	}
	best, _, err := Evaluate(ctx, node(), models2, holdout, abi.KindBatching, "same-model", res.Best, res.Objective, wall())
	if err != nil {
		t.Fatal(err)
	}
	gain := (def - best) / def
	t.Logf("unseen: defaults %.2f s, tuned %.2f s, gain %.1f%%", def, best, 100*gain)
	if gain < 0.03 {
		t.Errorf("the tuned parameters do not hold on an unseen workload: gain %.3f", gain)
	}
}

func TestSearchIsDeterministic(t *testing.T) {
	models, tr := workload(t, sim.GenConfig{Jobs: 120, Rate: 0.5, Checkpoints: 5, Seed: 3})
	run := func() *Result {
		r, err := Search(context.Background(), node(), models, tr, abi.KindEviction, "s3fifo", Options{Budget: 6, Seed: 9, Objective: ObjectiveLoadTime, Wall: wall()})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := run(), run()
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different results:\n%+v\n%+v", a, b)
	}
	if a.BestScore > a.DefaultScore {
		t.Errorf("best %v worse than defaults %v", a.BestScore, a.DefaultScore)
	}
	var md bytes.Buffer
	if err := a.WriteMarkdown(&md); err != nil || !strings.Contains(md.String(), "| small_ratio |") {
		t.Errorf("markdown: %v\n%s", err, md.String())
	}
}

func TestSearchErrors(t *testing.T) {
	models, tr := workload(t, sim.GenConfig{Jobs: 20, Seed: 1})
	for _, tc := range []struct {
		name   string
		kind   abi.Kind
		policy string
		opts   Options
		want   string
	}{
		{"not built in", abi.KindBatching, "mine", Options{}, "not a built-in"},
		{"no params", abi.KindBatching, "none", Options{}, "declares no tunable"},
		{"budget", abi.KindBatching, "same-model", Options{Budget: 1}, "at least 2"},
		{"objective", abi.KindBatching, "same-model", Options{Objective: "speed"}, "unknown objective"},
		{"param", abi.KindBatching, "same-model", Options{Params: []string{"colour"}}, "no parameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Search(context.Background(), node(), models, tr, tc.kind, tc.policy, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDims(t *testing.T) {
	wait := newDim(abi.Param{Name: "max_wait_ms", Type: abi.ParamInt, Default: 200, Min: 0, Max: 60000})
	size := newDim(abi.Param{Name: "max_size", Type: abi.ParamInt, Default: 4, Min: 1, Max: 64})
	ratio := newDim(abi.Param{Name: "r", Type: abi.ParamFloat, Default: 0.1, Min: 0.01, Max: 0.5})
	if !wait.log || size.log || ratio.log {
		t.Errorf("log transforms: wait %v size %v ratio %v", wait.log, size.log, ratio.log)
	}
	for _, d := range []dim{wait, size, ratio} {
		for _, u := range []float64{-1, 0, 0.3, 1, 2} {
			x := d.fromU(u)
			if x < d.p.Min || x > d.p.Max {
				t.Errorf("%s: fromU(%v) = %v out of bounds", d.p.Name, u, x)
			}
			if d.p.Type == abi.ParamInt && x != float64(int64(x)) {
				t.Errorf("%s: %v is not an integer", d.p.Name, x)
			}
		}
		if got := d.fromU(d.toU(d.p.Default)); got != d.p.Default {
			t.Errorf("%s: round trip of the default gives %v", d.p.Name, got)
		}
	}
}
