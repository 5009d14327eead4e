package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/predict"
)

// TestPredictorFigures prints the BENCHMARKS.md table of the predictor:
// total load time with the lookahead alone and with the predictor's
// warming added, against the optimum over every tier, on workloads whose
// popularity drifts and whose working set exceeds the RAM tier. It runs
// only with KILN_PREDICT_BENCH set:
//
//	KILN_PREDICT_BENCH=1 go test -count=1 -run TestPredictorFigures -v ./internal/sim/
func TestPredictorFigures(t *testing.T) {
	if os.Getenv("KILN_PREDICT_BENCH") == "" {
		t.Skip("set KILN_PREDICT_BENCH=1 to run the predictor's figures")
	}
	base, err := LoadBaseline("../../configs", "kiln-default")
	if err != nil {
		t.Fatal(err)
	}
	traces := os.DirFS("/work/shared/traces")
	type workload struct {
		name string
		make func() ([]Model, []Request, error)
	}
	workloads := []workload{
		{"zipf 0.9, 50 ckpts, drift 20m, 0.3/s", func() ([]Model, []Request, error) {
			return Generate(GenConfig{Kind: KindZipf, Jobs: 2000, Rate: 0.3, Checkpoints: 50, ZipfS: 0.9, Drift: 20 * time.Minute, Seed: 11})
		}},
		{"bursty 0.9, 50 ckpts, drift 40m, 1.2/s", func() ([]Model, []Request, error) {
			return Generate(GenConfig{Kind: KindBursty, Jobs: 3000, Rate: 1.2, Checkpoints: 50, ZipfS: 0.9, Drift: 40 * time.Minute,
				InteractiveFrac: 0.3, BurstFactor: 1.8, On: 5 * time.Minute, Off: 5 * time.Minute, Seed: 11})
		}},
		{"diurnal 1.1, 30 ckpts, drift 30m, 0.3/s", func() ([]Model, []Request, error) {
			return Generate(GenConfig{Kind: KindDiurnal, Jobs: 2000, Rate: 0.3, Checkpoints: 30, ZipfS: 1.1, Drift: 30 * time.Minute,
				Period: time.Hour, Seed: 5})
		}},
		{"ServeGen language (block mapping), 0.3/s", func() ([]Model, []Request, error) {
			return ImportServeGen(ServeGenOptions{FS: traces, Dir: "servegen/language/m-small", Start: 7*24*time.Hour + 12*time.Hour,
				Duration: 2 * time.Hour, TargetRate: 0.3, Checkpoints: 50, Mapping: MapBlock, MaxJobs: 2000, Seed: 1})
		}},
		{"Azure conv, Zipf 1.0, 0.3/s", func() ([]Model, []Request, error) {
			f, err := traces.Open("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
			if err != nil {
				return nil, nil, err
			}
			defer f.Close()
			return ImportAzure(f, "AzureLLMInferenceTrace_conv.csv", AzureOptions{TargetRate: 0.3, Checkpoints: 50, ZipfS: 1, MaxJobs: 2000, Seed: 1})
		}},
		// Generated with other seeds and shapes than the five above, none
		// of them used to choose the predictor's or the gate's constants:
		// bursts and lulls at a low mean rate, faster drift over a larger
		// catalog, and a node that is idle most of the time.
		{"gen: bursty 1.0, 60 ckpts, drift 15m, 0.3/s, seed 23", func() ([]Model, []Request, error) {
			return Generate(GenConfig{Kind: KindBursty, Jobs: 2000, Rate: 0.3, Checkpoints: 60, ZipfS: 1.0, Drift: 15 * time.Minute,
				InteractiveFrac: 0.3, BurstFactor: 3, On: 2 * time.Minute, Off: 6 * time.Minute, Seed: 23})
		}},
		{"gen: zipf 1.2, 80 ckpts, drift 10m, 0.5/s, seed 7", func() ([]Model, []Request, error) {
			return Generate(GenConfig{Kind: KindZipf, Jobs: 2500, Rate: 0.5, Checkpoints: 80, ZipfS: 1.2, Drift: 10 * time.Minute, Seed: 7})
		}},
		{"gen: idle, zipf 0.8, 40 ckpts, drift 30m, 0.05/s, seed 41", func() ([]Model, []Request, error) {
			return Generate(GenConfig{Kind: KindZipf, Jobs: 600, Rate: 0.05, Checkpoints: 40, ZipfS: 0.8, Drift: 30 * time.Minute, Seed: 41})
		}},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| workload | working set / RAM | arm | load time s | optimum s | ratio | RAM hit ratio | predictor warmed / used / wasted | predictor hit ratio | p95 latency s |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range workloads {
		models, reqs, err := w.make()
		if err != nil {
			t.Logf("%s: %v (skipped)", w.name, err)
			continue
		}
		var set int64
		used := map[string]bool{}
		for _, r := range reqs {
			for _, m := range r.Models {
				used[m] = true
			}
		}
		for _, m := range models {
			if used[m.ID] {
				set += m.Bytes
			}
		}
		for _, arm := range armsFromEnv(base.LookaheadJobs) {
			cfg := arm.apply(base)
			rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{Wall: clock.NewFake(time.Unix(0, 0)), Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			pred, hit := "—", "—"
			if p := rep.Predict; p != nil {
				pred = fmt.Sprintf("%s / %s / %s", device.FormatBytes(uint64(p.WarmedBytes)), device.FormatBytes(uint64(p.UsedBytes)), device.FormatBytes(uint64(p.WastedBytes)))
				hit = fmt.Sprintf("%.2f", p.HitRatio)
			}
			fmt.Fprintf(&b, "| %s | %s / %s | %s | %.0f | %.0f | %.3f | %.3f | %s | %s | %.1f |\n", w.name,
				device.FormatBytes(uint64(set)), device.FormatBytes(uint64(cfg.RAMBytes)), arm.name, rep.TotalLoadTimeS, rep.OptimalLoadTimeS,
				rep.LoadTimeVsOptimum, rep.Tiers["ram"].HitRatio(), pred, hit, rep.P95LatencyS)
			if os.Getenv("KILN_PREDICT_DIAG") != "" {
				fmt.Fprintf(&b, "|   diag: ram hits %d bytes %.0f GB, disk hits %d bytes %.0f GB, remote %d %.0f GB, vram misses %d, prefetch %+v\n",
					rep.Tiers["ram"].Hits, float64(rep.Tiers["ram"].Bytes)/1e9, rep.Tiers["disk"].Hits, float64(rep.Tiers["disk"].Bytes)/1e9,
					rep.Tiers["remote"].Hits, float64(rep.Tiers["remote"].Bytes)/1e9, rep.ColdLoads, *rep.Prefetch)
			}
		}
	}
	fmt.Print(b.String())
}

type predictArm struct {
	name string
	p    PredictConfig
	// eviction, when set, is policies.eviction for the run: the built-in
	// that evicts from VRAM and the host tiers, as a node's config sets it.
	eviction string
}

// apply sets the arm on a copy of the baseline config.
func (a predictArm) apply(cfg Config) Config {
	cfg.Predict = a.p
	if a.eviction != "" {
		cfg.Policies.Eviction = a.eviction
	}
	return cfg
}

// armsFromEnv are the arms to compare: the lookahead alone, and the
// predictor's arms, or those KILN_PREDICT_ARMS names (space-separated),
// each a comma-separated list of key=value: minp, margin, half (minutes),
// maxq, views (view+view), eviction (a built-in eviction policy for every
// tier), off (no predictor), and the experiment nowarm (PredictConfig.noWarm).
func armsFromEnv(lookahead int) []predictArm {
	arms := []predictArm{{name: "lookahead only"}}
	for _, spec := range strings.Fields(os.Getenv("KILN_PREDICT_ARMS")) {
		p := PredictConfig{Enabled: true, MaxQueued: lookahead}
		var eviction string
		for _, kv := range strings.Split(spec, ",") {
			k, v, _ := strings.Cut(kv, "=")
			var f float64
			fmt.Sscan(v, &f)
			switch k {
			case "minp":
				p.Warm.MinP = f
			case "margin":
				p.Warm.Margin = f
			case "half":
				p.Model.HalfLife = time.Duration(f * float64(time.Minute))
			case "maxq":
				p.MaxQueued = int(f)
			case "views":
				p.Model.Views = strings.Split(v, "+")
			case "nowarm":
				p.noWarm = true
			case "eviction":
				eviction = v
			case "off":
				p = PredictConfig{}
			}
		}
		arms = append(arms, predictArm{name: spec, p: p, eviction: eviction})
	}
	if len(arms) == 1 {
		arms = append(arms,
			predictArm{name: "+ predictor", p: PredictConfig{Enabled: true, MaxQueued: lookahead}},
			predictArm{name: "eviction lru, no predictor", eviction: "lru"},
			predictArm{name: "eviction demand, no predictor", eviction: "demand"},
			predictArm{name: "eviction demand + predictor", p: PredictConfig{Enabled: true, MaxQueued: lookahead}, eviction: "demand"})
	}
	return arms
}

// TestPredictorWarmsAndReplays: with the predictor on, a run warms models
// no queued job asked for, some of them are used, the books add up, and
// the same trace gives the same report to the last byte (the predictor's
// time is the simulator's).
func TestPredictorWarmsAndReplays(t *testing.T) {
	models, reqs, err := Generate(GenConfig{Kind: KindZipf, Jobs: 600, Rate: 0.2, Checkpoints: 30, ZipfS: 1.0, Drift: 10 * time.Minute, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	cfg := node(2, 1, 24e9, "lru")
	cfg.RAMBytes = 100e9
	cfg.LookaheadJobs = 4
	cfg.Predict = PredictConfig{Enabled: true, MaxQueued: 4}
	run := func() *Report {
		rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{Wall: clock.NewFake(time.Unix(0, 0)), Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		rep.WallS, rep.SimSpeedup = 0, 0
		return rep
	}
	a, b := run(), run()
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatal("two runs of one trace with the predictor differ")
	}
	p := a.Predict
	if p == nil || p.Warmed == 0 || p.Used == 0 {
		t.Fatalf("predict report %+v: want models warmed and some used", p)
	}
	if p.Used+p.Wasted != p.Warmed {
		t.Fatalf("predict report %+v: every warmed model ends used or wasted", p)
	}
	t.Logf("predictor: %+v", *p)
	if a.Prefetch == nil || a.Prefetch.Issued < p.Warmed {
		t.Fatalf("prefetch report %+v: the predictor's warms are prefetches too", a.Prefetch)
	}
}

// TestPredictorSeeds runs the predictor's arms on generated workloads of
// five shapes, each drawn with KILN_PREDICT_SEEDS seeds (default 5) that no
// constant was chosen on, and prints per shape and arm the spread of
// load_time_vs_optimum, the load time against the lookahead alone on the
// same trace (mean, worst, and how many seeds were worse), and the
// predictor's warmed, used and wasted bytes (summed over the seeds). One run's figures move by a
// few percent when a single decision changes, so a claim such as "never
// worse than the lookahead alone" is judged over seeds, not one trace:
//
//	KILN_PREDICT_BENCH=1 go test -count=1 -run TestPredictorSeeds -v ./internal/sim/
func TestPredictorSeeds(t *testing.T) {
	if os.Getenv("KILN_PREDICT_BENCH") == "" {
		t.Skip("set KILN_PREDICT_BENCH=1 to run the predictor's figures")
	}
	base, err := LoadBaseline("../../configs", "kiln-default")
	if err != nil {
		t.Fatal(err)
	}
	seeds := 5
	if n, err := strconv.Atoi(os.Getenv("KILN_PREDICT_SEEDS")); err == nil && n > 0 {
		seeds = n
	}
	// KILN_PREDICT_SEED_BASE draws another set of seeds: a constant chosen
	// on one set is checked on another.
	seedBase := uint64(1000)
	if n, err := strconv.ParseUint(os.Getenv("KILN_PREDICT_SEED_BASE"), 10, 64); err == nil {
		seedBase = n
	}
	shapes := []struct {
		name string
		gen  GenConfig
	}{
		{"zipf 0.9, 50 ckpts, drift 20m, 0.3/s", GenConfig{Kind: KindZipf, Jobs: 1500, Rate: 0.3, Checkpoints: 50, ZipfS: 0.9, Drift: 20 * time.Minute}},
		{"bursty 1.0, 60 ckpts, drift 15m, 0.3/s (×3 on 2m / off 6m)", GenConfig{Kind: KindBursty, Jobs: 1500, Rate: 0.3, Checkpoints: 60, ZipfS: 1.0,
			Drift: 15 * time.Minute, InteractiveFrac: 0.3, BurstFactor: 3, On: 2 * time.Minute, Off: 6 * time.Minute}},
		{"diurnal 1.1, 30 ckpts, drift 30m, 0.3/s, period 1h", GenConfig{Kind: KindDiurnal, Jobs: 1500, Rate: 0.3, Checkpoints: 30, ZipfS: 1.1,
			Drift: 30 * time.Minute, Period: time.Hour}},
		{"zipf 1.2, 80 ckpts, drift 10m, 0.5/s", GenConfig{Kind: KindZipf, Jobs: 1500, Rate: 0.5, Checkpoints: 80, ZipfS: 1.2, Drift: 10 * time.Minute}},
		{"idle: zipf 0.8, 40 ckpts, drift 30m, 0.05/s", GenConfig{Kind: KindZipf, Jobs: 500, Rate: 0.05, Checkpoints: 40, ZipfS: 0.8, Drift: 30 * time.Minute}},
	}
	arms := armsFromEnv(base.LookaheadJobs)
	var b strings.Builder
	fmt.Fprintf(&b, "| workload (%d seeds) | arm | ratio to optimum, mean (min–max) | load time / lookahead only, mean (max) | seeds worse | warmed / used / wasted | hit ratio |\n|---|---|---|---|---|---|---|\n", seeds)
	for _, sh := range shapes {
		type agg struct {
			ratio, rel     []float64
			worse          int
			warm, use, was int64
		}
		sums := make([]agg, len(arms))
		for seed := range seeds {
			g := sh.gen
			g.Seed = seedBase + 17*uint64(seed)
			models, reqs, err := Generate(g)
			if err != nil {
				t.Fatal(err)
			}
			var baseLoad float64
			for i, arm := range arms {
				cfg := arm.apply(base)
				rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{Wall: clock.NewFake(time.Unix(0, 0)), Seed: 1})
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					baseLoad = rep.TotalLoadTimeS
				}
				a := &sums[i]
				a.ratio = append(a.ratio, rep.LoadTimeVsOptimum)
				a.rel = append(a.rel, rep.TotalLoadTimeS/baseLoad)
				if rep.TotalLoadTimeS > baseLoad*1.0005 {
					a.worse++
				}
				if p := rep.Predict; p != nil {
					a.warm += p.WarmedBytes
					a.use += p.UsedBytes
					a.was += p.WastedBytes
				}
			}
		}
		for i, arm := range arms {
			a := sums[i]
			pred, hit := "—", "—"
			if i > 0 {
				pred = fmt.Sprintf("%s / %s / %s", device.FormatBytes(uint64(a.warm)), device.FormatBytes(uint64(a.use)), device.FormatBytes(uint64(a.was)))
				if a.use+a.was > 0 {
					hit = fmt.Sprintf("%.2f", float64(a.use)/float64(a.use+a.was))
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %.3f (%.3f–%.3f) | %.3f (%.3f) | %d | %s | %s |\n", sh.name, arm.name,
				mean(a.ratio), slices.Min(a.ratio), slices.Max(a.ratio), mean(a.rel), slices.Max(a.rel), a.worse, pred, hit)
		}
	}
	fmt.Print(b.String())
}

// TestPredictorPlansRespectTheRoom: every plan the simulator's predictor
// makes is for a room that names the models workers hold in VRAM and
// protects the queued jobs' models and the transfers in flight, and no plan
// warms the former or drops the latter; some plans warm and some drop, so
// that the checks see decisions.
func TestPredictorPlansRespectTheRoom(t *testing.T) {
	models, reqs, err := Generate(GenConfig{Kind: KindBursty, Jobs: 800, Rate: 0.4, Checkpoints: 40, ZipfS: 0.9, Drift: 10 * time.Minute,
		InteractiveFrac: 0.3, BurstFactor: 3, On: 2 * time.Minute, Off: 4 * time.Minute, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	cfg := node(2, 2, 24e9, "gdsf")
	cfg.RAMBytes = 60e9
	cfg.LookaheadJobs = 4
	cfg.Predict = PredictConfig{Enabled: true, MaxQueued: 4}
	s, err := newSimulator(context.Background(), cfg.withDefaults(), models, &Trace{Requests: reqs}, Options{Wall: clock.NewFake(time.Unix(0, 0)), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.host.Close()
	var plans, warms, drops, above int
	s.pred.onPlan = func(plan predict.Plan, room predict.Room, needed map[string]bool) {
		plans++
		warms += len(plan.Warm)
		drops += len(plan.Evict)
		above += len(room.Above)
		for _, m := range plan.Warm {
			if room.Above[m] {
				t.Errorf("plan warms %s, which a worker holds in VRAM", m)
			}
		}
		for _, m := range plan.Evict {
			if needed[m] {
				t.Errorf("plan drops %s, which a queued job needs", m)
			}
		}
		if room.Capacity >= s.ram.capacity {
			t.Errorf("warm room %d: want the tier's target fill, below its capacity %d", room.Capacity, s.ram.capacity)
		}
	}
	if err := s.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if plans == 0 || warms == 0 || drops == 0 || above == 0 {
		t.Fatalf("%d plans, %d warms, %d drops, %d VRAM-resident models seen: want some of each", plans, warms, drops, above)
	}
	t.Logf("%d plans, %d warms, %d drops", plans, warms, drops)
}
