package sim

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/device"
)

// Baseline names of the benchmark suite, the config files
// configs/<name>.yaml.
const (
	BaselineNaive = "naive-serverless"
	BaselineComfy = "comfy-single"
	BaselineKiln  = "kiln-default"
)

// BenchOptions configure Bench: where the configs and traces are, and the
// suite's fixed parameters.
type BenchOptions struct {
	// Baseline loads a baseline of the suite by name (BaselineNaive,
	// BaselineComfy, BaselineKiln: configs/<name>.yaml over the embedded
	// default) with sets applied over it, as `--set` does: node.SimBaseline
	// does it from kiln's config files. The simulator reads no config file
	// itself.
	Baseline func(name string, sets ...string) (Config, error)
	// Traces is the shared traces folder (servegen/, azure-llm-2023/).
	Traces fs.FS
	// Quick shrinks the suite (shorter spans, fewer rates) for tests.
	Quick bool
	// Wall measures wall time for the speed figures; nil means
	// clock.Real().
	Wall clock.Clock
	// Parallel bounds the runs in flight; 0 means runtime.NumCPU(). The
	// speed measurement always runs alone.
	Parallel int
	// Progress, when set, receives one line per finished step.
	Progress io.Writer
}

// benchWorkload is one trace of the suite.
type benchWorkload struct {
	name, desc string
	// make imports the workload at a target mean rate (jobs/s).
	make func(rate float64) ([]Model, []Request, error)
}

// Suite parameters. The base rate is a moderate load for the simulated
// node (4 GPUs); the SLO is the interactive deadline of the traces.
const (
	benchBaseRate    = 0.5
	benchSLO         = 30 * time.Second
	benchCheckpoints = 24
	benchSatRate     = 4.0
)

var benchRates = []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 2, 2.5, 3, 4}

func (o BenchOptions) workloads() []benchWorkload {
	span := time.Hour
	maxJobs := 6000
	if o.Quick {
		span, maxJobs = 10*time.Minute, 600
	}
	sg := func(name, dir, mapping string, start time.Duration) benchWorkload {
		return benchWorkload{
			name: name,
			desc: fmt.Sprintf("ServeGen %s, %s from %s, clients → %d checkpoints by %s", dir, span, start, benchCheckpoints, mapping),
			make: func(rate float64) ([]Model, []Request, error) {
				return ImportServeGen(ServeGenOptions{FS: o.Traces, Dir: "servegen/" + dir, Start: start, Duration: span,
					TargetRate: rate, Checkpoints: benchCheckpoints, Mapping: mapping, MaxJobs: maxJobs, Seed: 1})
			},
		}
	}
	return []benchWorkload{
		sg("language", "language/m-small", MapBlock, 7*24*time.Hour+12*time.Hour),
		sg("multimodal", "multimodal/mm-image", MapStripe, 12*time.Hour),
		sg("reason", "reason/deepseek-r1", MapStripe, 12*time.Hour),
		{
			name: "azure-conv",
			desc: fmt.Sprintf("Azure LLM 2023 conversation arrivals (first %d), models by Zipf(1.0) over %d checkpoints", maxJobs, benchCheckpoints),
			make: func(rate float64) ([]Model, []Request, error) {
				f, err := o.Traces.Open("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
				if err != nil {
					return nil, nil, err
				}
				defer f.Close()
				return ImportAzure(f, "AzureLLMInferenceTrace_conv.csv", AzureOptions{TargetRate: rate, Checkpoints: benchCheckpoints,
					ZipfS: 1, MaxJobs: maxJobs, Seed: 1})
			},
		},
	}
}

// benchRun is one simulation of the suite.
type benchRun struct {
	workload string
	config   string // baseline name, or a variant label
	rate     float64
	cfg      Config
	rep      *Report
	err      error
}

// Bench runs the suite: the three baselines on every workload at the base
// rate and over a rate sweep (throughput at the p95 SLO), each eviction
// policy against the offline optimum, GPU busy at saturation, prefetch and
// batching figures, and the simulator's speed; it writes the tables as
// markdown.
func Bench(ctx context.Context, o BenchOptions, w io.Writer) error {
	if o.Wall == nil {
		o.Wall = clock.Real()
	}
	if o.Parallel <= 0 {
		o.Parallel = runtime.NumCPU()
	}
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}
	baselines := map[string]Config{}
	for _, name := range []string{BaselineNaive, BaselineComfy, BaselineKiln} {
		c, err := o.Baseline(name)
		if err != nil {
			return fmt.Errorf("bench: %s: %w", name, err)
		}
		baselines[name] = c
	}
	variant := func(sets ...string) (Config, error) { return o.Baseline(BaselineKiln, sets...) }
	rates := benchRates
	if o.Quick {
		rates = []float64{0.25, 1, 4}
	}
	workloads := o.workloads()
	start := o.Wall.Now()

	// Inputs are imported once per (workload, rate) and shared read-only.
	type input struct {
		models []Model
		reqs   []Request
	}
	var inMu sync.Mutex
	inputs := map[string]input{}
	load := func(wl benchWorkload, rate float64) (input, error) {
		key := fmt.Sprintf("%s@%g", wl.name, rate)
		inMu.Lock()
		in, ok := inputs[key]
		inMu.Unlock()
		if ok {
			return in, nil
		}
		m, r, err := wl.make(rate)
		if err != nil {
			return input{}, fmt.Errorf("bench: %s: %w", wl.name, err)
		}
		in = input{m, r}
		inMu.Lock()
		inputs[key] = in
		inMu.Unlock()
		return in, nil
	}
	runAll := func(runs []*benchRun) error {
		sem := make(chan struct{}, o.Parallel)
		var wg sync.WaitGroup
		for _, r := range runs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				var wl benchWorkload
				for _, x := range workloads {
					if x.name == r.workload {
						wl = x
					}
				}
				in, err := load(wl, r.rate)
				if err != nil {
					r.err = err
					return
				}
				r.rep, r.err = Run(ctx, r.cfg, in.models, &Trace{Requests: in.reqs}, Options{Wall: o.Wall, Seed: 1})
			}()
		}
		wg.Wait()
		for _, r := range runs {
			if r.err != nil {
				return fmt.Errorf("bench: %s %s at %g jobs/s: %w", r.workload, r.config, r.rate, r.err)
			}
		}
		return nil
	}

	// 1. Base rate: the three baselines, kiln's eviction variants (one and
	// two workers per device) and kiln with fused batches.
	var base []*benchRun
	evictions := []string{"lru", "gdsf", "s3fifo"}
	for _, wl := range workloads {
		for _, name := range []string{BaselineNaive, BaselineComfy, BaselineKiln} {
			base = append(base, &benchRun{workload: wl.name, config: name, rate: benchBaseRate, cfg: baselines[name]})
		}
		for _, ev := range evictions {
			for _, pd := range []int{1, 2} {
				// A RAM tier that holds the whole catalog prices every
				// load after the first at a RAM→GPU transfer, as the
				// optimum does: the ratio then judges the VRAM eviction
				// decisions alone, not misses of a smaller RAM tier.
				c, err := variant("policies.eviction="+ev, fmt.Sprintf("workers.per_device=%d", pd), "tiers.ram.capacity_bytes=1099511627776")
				if err != nil {
					return err
				}
				base = append(base, &benchRun{workload: wl.name, config: fmt.Sprintf("evict-%s-pd%d", ev, pd), rate: benchBaseRate, cfg: c})
			}
		}
		c, err := variant("sim.batch_execution=fused")
		if err != nil {
			return err
		}
		base = append(base, &benchRun{workload: wl.name, config: "kiln-fused", rate: benchBaseRate, cfg: c})
		for _, name := range []string{BaselineNaive, BaselineComfy, BaselineKiln} {
			base = append(base, &benchRun{workload: wl.name, config: name + "@sat", rate: benchSatRate, cfg: baselines[name]})
		}
	}
	if err := runAll(base); err != nil {
		return err
	}
	progress("bench: %d base-rate and saturation runs done (%.0f s)", len(base), o.Wall.Since(start).Seconds())
	find := func(runs []*benchRun, wl, cfg string) *Report {
		for _, r := range runs {
			if r.workload == wl && r.config == cfg {
				return r.rep
			}
		}
		return nil
	}

	// 2. The rate sweep, per workload and baseline, rate by rate until the
	// p95 passes the SLO (higher rates only queue more).
	type sweepKey struct{ wl, cfg string }
	best := map[sweepKey]*benchRun{}
	stopped := map[sweepKey]bool{}
	lowest := map[sweepKey]float64{}
	for _, rate := range rates {
		var step []*benchRun
		for _, wl := range workloads {
			for _, name := range []string{BaselineNaive, BaselineComfy, BaselineKiln} {
				if !stopped[sweepKey{wl.name, name}] {
					step = append(step, &benchRun{workload: wl.name, config: name, rate: rate, cfg: baselines[name]})
				}
			}
		}
		if len(step) == 0 {
			break
		}
		if err := runAll(step); err != nil {
			return err
		}
		for _, r := range step {
			k := sweepKey{r.workload, r.config}
			if r.rep.P95LatencyS <= benchSLO.Seconds() && r.rep.Failed == 0 {
				best[k] = r
			} else {
				stopped[k] = true
				lowest[k] = r.rate
			}
		}
		progress("bench: sweep at %g jobs/s: %d runs (%.0f s)", rate, len(step), o.Wall.Since(start).Seconds())
	}

	// 3. Speed: 10,000 jobs on 4 GPUs, alone on the machine.
	speedJobs := 10000
	if o.Quick {
		speedJobs = 1000
	}
	speedModels, speedReqs, err := Generate(GenConfig{Kind: KindZipf, Jobs: speedJobs, Rate: 0.8, Checkpoints: benchCheckpoints, Seed: 1})
	if err != nil {
		return err
	}
	type speed struct {
		label string
		rep   *Report
	}
	var speeds []speed
	for _, sp := range []struct {
		label string
		reqs  []Request
	}{
		{"zipf, 0.8 jobs/s (below saturation)", speedReqs},
		{"zipf, 4 jobs/s (saturated: long queues)", rescale(speedReqs, 5)},
	} {
		rep, err := Run(ctx, baselines[BaselineKiln], speedModels, &Trace{Requests: sp.reqs}, Options{Wall: o.Wall, Seed: 1})
		if err != nil {
			return err
		}
		speeds = append(speeds, speed{sp.label, rep})
	}
	total := o.Wall.Since(start)
	progress("bench: done in %.0f s", total.Seconds())

	// Tables.
	var b strings.Builder
	f := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	kiln := baselines[BaselineKiln]
	f("Generated by `make bench-sim` (`kiln sim bench`); every figure is simulated. Node (all three configs): %d × %s GPUs of %s "+
		"(%.0f%% headroom), host→device %.0f GB/s, disk %.1f GB/s, source %.2f GB/s; RAM tier %s where a config has one. "+
		"Policies run natively (same source as their WASM build). SLO: p95 latency ≤ %s. Base rate %.2g jobs/s.\n\n",
		len(kiln.Devices), "simulated", device.FormatBytes(kiln.Devices[0].MemoryBytes), kiln.Headroom*100, kiln.Devices[0].H2DBytesPerS/1e9,
		kiln.Cost.DiskBytesPerS/1e9, kiln.RemoteBytesPerS/1e9, device.FormatBytes(uint64(kiln.RAMBytes)), benchSLO, benchBaseRate)
	f("| config | workers/GPU | scheduling | balancing | eviction | batching | RAM tier | lookahead |\n|---|---|---|---|---|---|---|---|\n")
	for _, name := range []string{BaselineNaive, BaselineComfy, BaselineKiln} {
		c := baselines[name].withDefaults()
		ram := device.FormatBytes(uint64(c.RAMBytes))
		if c.NoRAMTier {
			ram = "none"
		}
		f("| %s | %d | %s | %s | %s | %s | %s | %d jobs |\n", name, c.WorkersPerDevice, c.Policies.Scheduling, c.Policies.Balancing,
			c.Policies.Eviction, c.Policies.Batching, ram, c.LookaheadJobs)
	}
	f("\nWorkloads:\n\n")
	var catalog []Model
	for _, wl := range workloads {
		in, _ := load(wl, benchBaseRate)
		catalog = in.models
		f("- **%s**: %s; %d jobs at the base rate.\n", wl.name, wl.desc, len(in.reqs))
	}
	// The traces carry no model sizes: every workload uses this table
	// (sim.Catalog, from published checkpoint sizes; docs/simulator.md).
	type span struct {
		n      int
		lo, hi int64
	}
	fams := map[string]*span{}
	var order []string
	for _, m := range catalog {
		sp := fams[m.Family]
		if sp == nil {
			sp = &span{lo: m.Bytes, hi: m.Bytes}
			fams[m.Family] = sp
			order = append(order, m.Family)
		}
		sp.n++
		sp.lo, sp.hi = min(sp.lo, m.Bytes), max(sp.hi, m.Bytes)
	}
	f("\nModel sizes (the same catalog in every workload; the traces have none):\n\n| family | models | size |\n|---|---|---|\n")
	for _, fam := range order {
		sp := fams[fam]
		size := fmt.Sprintf("%.2f GB", float64(sp.lo)/1e9)
		if sp.hi != sp.lo {
			size = fmt.Sprintf("%.2f–%.2f GB", float64(sp.lo)/1e9, float64(sp.hi)/1e9)
		}
		f("| %s | %d | %s |\n", fam, sp.n, size)
	}

	// The goals, per workload, from the tables below.
	f("\n### Goals\n\n| workload | p95 kiln/naive (goal ≤ 0.2) | throughput at SLO kiln/naive (≥ 2) | best eviction / optimum, 1 and 2 workers/GPU (≤ 1.2) | kiln GPU busy at saturation (≥ 0.9) |\n|---|---|---|---|---|\n")
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	for _, wl := range workloads {
		naive, k := find(base, wl.name, BaselineNaive), find(base, wl.name, BaselineKiln)
		p95 := k.P95LatencyS / naive.P95LatencyS
		thr := "no config meets the SLO at the lowest rate"
		nb, kb := best[sweepKey{wl.name, BaselineNaive}], best[sweepKey{wl.name, BaselineKiln}]
		switch {
		case nb != nil && kb != nil:
			x := kb.rep.ThroughputJobsPerS / nb.rep.ThroughputJobsPerS
			thr = fmt.Sprintf("%.2f× %s", x, mark(x >= 2))
		case kb != nil:
			thr = "∞ (naive never meets it) met"
		}
		bestEv := func(pd int) (string, float64) {
			name, x := "", math.Inf(1)
			for _, ev := range evictions {
				r := find(base, wl.name, fmt.Sprintf("evict-%s-pd%d", ev, pd))
				if v := r.TotalLoadTimeS / r.OptimalLoadTimeS; v < x {
					name, x = ev, v
				}
			}
			return name, x
		}
		e1, x1 := bestEv(1)
		e2, x2 := bestEv(2)
		sat := find(base, wl.name, BaselineKiln+"@sat").GPUBusy
		f("| %s | %.3f %s | %s | %s %.2f× %s; %s %.2f× %s | %.3f %s |\n", wl.name, p95, mark(p95 <= 0.2), thr,
			e1, x1, mark(x1 <= 1.2), e2, x2, mark(x2 <= 1.2), sat, mark(sat >= 0.9))
	}

	f("\n### kiln-default vs naive-serverless at %.2g jobs/s\n\n", benchBaseRate)
	f("| workload | config | p50 s | p95 s | p95 vs naive | SLO attainment | cold loads | load time s | GPU busy |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, wl := range workloads {
		naive := find(base, wl.name, BaselineNaive)
		for _, name := range []string{BaselineNaive, BaselineComfy, BaselineKiln} {
			r := find(base, wl.name, name)
			f("| %s | %s | %.1f | %.1f | %s | %.3f | %d | %.0f | %.2f |\n", wl.name, name, r.P50LatencyS, r.P95LatencyS,
				ratio(r.P95LatencyS, naive.P95LatencyS), r.SLOAttainment, r.ColdLoads, r.TotalLoadTimeS, r.GPUBusy)
		}
	}

	f("\n### Throughput at the p95 SLO (%s)\n\n", benchSLO)
	f("The highest swept rate (%v jobs/s) whose p95 latency stays within the SLO with no failed job, and the throughput "+
		"measured there; the sweep stops at the first rate past the SLO.\n\n", rates)
	f("| workload | config | highest rate within SLO | throughput jobs/s | p95 there s | vs naive |\n|---|---|---|---|---|---|\n")
	for _, wl := range workloads {
		nb := best[sweepKey{wl.name, BaselineNaive}]
		for _, name := range []string{BaselineNaive, BaselineComfy, BaselineKiln} {
			r := best[sweepKey{wl.name, name}]
			if r == nil {
				f("| %s | %s | below %g | 0 | — | — |\n", wl.name, name, lowest[sweepKey{wl.name, name}])
				continue
			}
			vs := "—"
			if nb != nil {
				vs = ratio(r.rep.ThroughputJobsPerS, nb.rep.ThroughputJobsPerS)
			} else if name != BaselineNaive {
				vs = "∞ (naive never meets the SLO)"
			}
			cap := ""
			if !stopped[sweepKey{wl.name, name}] {
				cap = " (sweep's top)"
			}
			f("| %s | %s | %g%s | %.3f | %.1f | %s |\n", wl.name, name, r.rate, cap, r.rep.ThroughputJobsPerS, r.rep.P95LatencyS, vs)
		}
	}

	f("\n### Eviction policies vs the offline optimum (kiln-default, %.2g jobs/s)\n\n", benchBaseRate)
	f("Load time charged under each policy divided by `optimal_load_time_s`: %s. The RAM tier is raised to 1 TiB for these runs "+
		"(it holds the whole catalog), so that a load after the first costs a RAM→GPU transfer in the run as in the optimum and the "+
		"ratio judges the VRAM eviction decisions alone. The last column divides by `optimal_shared_load_time_s` (%s): what two "+
		"workers per GPU cost in duplicate copies on top of eviction.\n\n", OptimumVariant, SharedOptimumVariant)
	f("| workload | eviction | 1 worker/GPU: load s | optimum s | ratio | 2 workers/GPU: load s | optimum s | ratio | VRAM hit ratio (2/GPU) | 2/GPU vs one copy per GPU |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, wl := range workloads {
		for _, ev := range evictions {
			one := find(base, wl.name, fmt.Sprintf("evict-%s-pd1", ev))
			two := find(base, wl.name, fmt.Sprintf("evict-%s-pd2", ev))
			f("| %s | %s | %.0f | %.0f | %s | %.0f | %.0f | %s | %.3f | %s |\n", wl.name, ev, one.TotalLoadTimeS, one.OptimalLoadTimeS,
				ratio(one.TotalLoadTimeS, one.OptimalLoadTimeS), two.TotalLoadTimeS, two.OptimalLoadTimeS,
				ratio(two.TotalLoadTimeS, two.OptimalLoadTimeS), two.Tiers["vram"].HitRatio(),
				ratio(two.TotalLoadTimeS, two.OptimalSharedLoadTimeS))
		}
	}

	f("\n### GPU busy at saturation (%.2g jobs/s offered)\n\n", benchSatRate)
	f("| workload | config | GPU busy | worker busy | throughput jobs/s | cold loads |\n|---|---|---|---|---|---|\n")
	for _, wl := range workloads {
		for _, name := range []string{BaselineNaive, BaselineComfy, BaselineKiln} {
			r := find(base, wl.name, name+"@sat")
			f("| %s | %s | %.3f | %.3f | %.3f | %d |\n", wl.name, name, r.GPUBusy, r.WorkerBusy, r.ThroughputJobsPerS, r.ColdLoads)
		}
	}

	f("\n### Lookahead prefetch and batching (kiln-default, %.2g jobs/s)\n\n", benchBaseRate)
	f("Prefetch: models of the first %d queued jobs pulled up to the RAM tier while they wait (used: a job then loaded it from RAM or "+
		"joined the transfer; wasted: evicted from RAM, or never used, first). Batching: same-model batches, charged as live "+
		"protocol-v1 workers run them, one after the other with the models warm (sequential, the default), and fused (the cost "+
		"model's batch efficiency: ×2.25 at batch 8 for 512², ×1.13 for 1024², what a worker that fuses would gain).\n\n", kiln.LookaheadJobs)
	f("| workload | prefetch issued | used | wasted | load time saved s | batches (jobs) | p95 fused s | p95 sequential s |\n|---|---|---|---|---|---|---|---|\n")
	for _, wl := range workloads {
		r := find(base, wl.name, BaselineKiln)
		fused := find(base, wl.name, "kiln-fused")
		p := r.Prefetch
		if p == nil {
			p = &PrefetchReport{}
		}
		f("| %s | %d (%s) | %d (%s) | %d (%s) | %.1f | %d (%d) | %.1f | %.1f |\n", wl.name, p.Issued, device.FormatBytes(uint64(p.IssuedBytes)),
			p.Used, device.FormatBytes(uint64(p.UsedBytes)), p.Wasted, device.FormatBytes(uint64(p.WastedBytes)), p.LoadTimeSavedS,
			r.Batching.Batches, r.Batching.BatchedJobs, fused.P95LatencyS, r.P95LatencyS)
	}

	f("\n### Simulator speed (kiln-default, 4 GPUs × 2 workers, %d jobs)\n\n", speedJobs)
	f("| workload | simulated s | wall s | speed-up |\n|---|---|---|---|\n")
	for _, sp := range speeds {
		f("| %s | %.0f | %.2f | %.0f× |\n", sp.label, sp.rep.SimulatedS, sp.rep.WallS, sp.rep.SimSpeedup)
	}
	f("\nMachine: %d CPUs (%s/%s), shared with other work while measured; the whole suite took %.0f s of wall time.\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, total.Seconds())
	_, err = io.WriteString(w, b.String())
	return err
}

// rescale divides arrival times by factor: the same sequence, factor
// times faster.
func rescale(reqs []Request, factor float64) []Request {
	out := make([]Request, len(reqs))
	copy(out, reqs)
	for i := range out {
		out[i].Time = time.Duration(float64(out[i].Time) / factor)
	}
	return out
}

// ratio formats a/b as "0.12×", or "—" when b is 0.
func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a/b) {
		return "—"
	}
	return fmt.Sprintf("%.3g×", a/b)
}

// ReplaceSection returns doc with the text between the begin and end
// markers replaced by body (markers kept), or with the markers and body
// appended when doc has none.
func ReplaceSection(doc, begin, end, body string) string {
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		return doc + "\n" + begin + "\n" + body + end + "\n"
	}
	return doc[:i+len(begin)] + "\n" + body + doc[j:]
}
