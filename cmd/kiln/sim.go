package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/node"
	"github.com/kiln-gpu/kiln/internal/sim"
	"github.com/kiln-gpu/kiln/internal/tune"
)

const simUsage = `usage:
  kiln sim --trace TRACE.csv --models MODELS.csv [--config FILE] [--set k=v]... [--seed N] [--report json|md]
           [--nodes N]   (a cluster of N nodes of the config's shape; policies.routing picks each job's node)
           [--ram-bytes N] [--disk-bytes N] [--remote-bytes-per-s F]
           [--tune KIND=POLICY [--budget N] [--objective mean_latency|p95_latency|p99_latency|slo_miss|load_time]]
           [--canary KIND=POLICY[@V] [--type canary|ab|switchback] [--steps 5,25,50,100] [--guard 'p95<=30s']... [--unit workers|traffic]]
                         (with --nodes N, KIND is routing: each arm routes its own jobs)
           [--watch KIND=POLICY[@V]@T]   (activate by hand at T, e.g. scheduling=fifo@90m; the watch judges it)
  kiln sim gen --kind zipf|bursty|diurnal --out DIR [--jobs N] [--rate F] [--checkpoints N] [--zipf-s F]
           [--drift DUR] [--burst-factor F] [--on DUR] [--off DUR] [--period DUR] [--amplitude F]
           [--interactive F] [--deadline-ms N] [--seed N]
  kiln sim gen --kind servegen --servegen DIR --out DIR [--start DUR] [--duration DUR] [--rate F | --rate-scale F]
           [--mapping stripe|block] [--checkpoints N] [--jobs N] [--interactive F] [--deadline-ms N] [--seed N]
  kiln sim gen --kind azure --azure FILE --out DIR [--rate F | --rate-scale F] [--checkpoints N] [--zipf-s F] [--jobs N] [--seed N]
  kiln sim bench [--traces DIR] [--update BENCHMARKS.md] [--quick]
`

// cmdSim runs the trace-driven simulator (internal/sim) or, with "gen",
// writes a synthetic workload.
func cmdSim(args []string) error {
	if len(args) > 0 && args[0] == "gen" {
		return cmdSimGen(args[1:])
	}
	if len(args) > 0 && args[0] == "bench" {
		return cmdSimBench(args[1:])
	}
	fs := newFlags("sim", simUsage)
	tracePath := fs.String("trace", "", "trace CSV: time_s,models,class,deadline_ms[,workflow]")
	modelsPath := fs.String("models", "", "model table CSV: model_id,bytes,family")
	seed := fs.Int64("seed", 1, "seed recorded in the report; with --nodes, also of the routing decisions' random words (one node draws no random numbers)")
	format := fs.String("report", "json", "report format: json or md")
	ramBytes := fs.Int64("ram-bytes", 0, "L2 RAM tier capacity (default tiers.ram.capacity_bytes)")
	diskBytes := fs.Int64("disk-bytes", 0, "L3 disk tier capacity (default tiers.disk.capacity_bytes)")
	remoteBW := fs.Float64("remote-bytes-per-s", 0, "model source (L4) read bandwidth (default 1.25e9)")
	tuneSpec := fs.String("tune", "", "KIND=POLICY: also search the built-in policy's declared parameters (internal/tune)")
	budget := fs.Int("budget", tune.DefaultBudget, "--tune: simulator runs, the defaults' included")
	objective := fs.String("objective", tune.ObjectiveMeanLatency, "--tune: what to minimise")
	canary := fs.String("canary", "", "KIND=POLICY: run a canary of the built-in policy with the live experiment controller (internal/experiment)")
	canarySteps := fs.String("steps", "", "--canary: steps in percent (default experiments.steps)")
	var canaryGuards []string
	fs.Func("guard", "--canary: a guard such as 'p95<=30s' (repeatable)", func(g string) error { canaryGuards = append(canaryGuards, g); return nil })
	canaryUnit := fs.String("unit", "", "--canary: workers or traffic (default: workers with two or more workers; traffic for routing)")
	canaryType := fs.String("type", "canary", "--canary: the experiment's type: canary, ab (an A/B test, 50% by default) or switchback")
	watch := fs.String("watch", "", "KIND=POLICY[@V]@T: activate POLICY at virtual time T and let the watch (experiments.watch) judge it")
	nodes := fs.Int("nodes", 1, "simulate a cluster of N nodes, each the config's node; policies.routing routes, sim.network_delay is the hop (internal/sim RunCluster)")
	var cf configFlags
	cf.register(fs.FlagSet)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("sim", "unexpected argument %q (want gen, bench, or flags)", pos[0])
	}
	if *tracePath == "" || *modelsPath == "" {
		return usagef("sim", "--trace and --models are required")
	}
	if *format != "json" && *format != "md" {
		return usagef("sim", "--report %q: want json or md", *format)
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	mf, err := os.Open(*modelsPath)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	defer mf.Close()
	models, err := sim.ReadModels(mf, *modelsPath)
	if err != nil {
		return err
	}
	tf, err := os.Open(*tracePath)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	defer tf.Close()
	trace, err := sim.ReadTrace(tf, sim.TraceOptions{File: *tracePath, Models: models, WorkflowDir: filepath.Dir(*tracePath)})
	if err != nil {
		return err
	}
	sc := node.SimConfig(cfg)
	if *ramBytes > 0 {
		sc.RAMBytes = *ramBytes
	}
	if *diskBytes > 0 {
		sc.DiskBytes = *diskBytes
	}
	if *remoteBW > 0 {
		sc.RemoteBytesPerS = *remoteBW
	}
	if *tuneSpec != "" {
		if _, _, err := parseTuneSpec(*tuneSpec); err != nil {
			return err
		}
	}
	opts := sim.Options{Seed: *seed}
	if *canary != "" {
		spec, err := sim.ParseCanary(*canary)
		if err != nil {
			return err
		}
		if *canarySteps != "" {
			if spec.Steps, err = experiment.ParseSteps(*canarySteps); err != nil {
				return err
			}
		}
		spec.Guards, spec.Unit, spec.Type = canaryGuards, experiment.Unit(*canaryUnit), experiment.Type(*canaryType)
		opts.Canary = &sim.Canary{Spec: spec, Config: cfg.Experiments, Seed: uint64(*seed)}
	}
	if *watch != "" {
		w, err := sim.ParseWatch(*watch)
		if err != nil {
			return err
		}
		w.Config = cfg.Experiments.Watch
		opts.Watch = &w
	}
	if *nodes < 1 {
		return fmt.Errorf("sim: --nodes %d: want at least 1", *nodes)
	}
	rep, err := sim.RunCluster(context.Background(), sim.ClusterConfig{Node: sc, Nodes: *nodes, NetworkDelay: cfg.Sim.NetworkDelay}, models, trace, opts)
	if err != nil {
		return err
	}
	tuned, err := simTune(sc, models, trace, *tuneSpec, *budget, *objective, *seed)
	if err != nil {
		return err
	}
	return writeSimTune(os.Stdout, *format, rep, tuned)
}

func cmdSimGen(args []string) error {
	fs := newFlags("sim gen", simUsage)
	var g sim.GenConfig
	fs.StringVar(&g.Kind, "kind", sim.KindZipf, "workload: zipf, bursty, diurnal, servegen or azure")
	out := fs.String("out", ".", "directory for trace.csv and models.csv")
	fs.IntVar(&g.Jobs, "jobs", 1000, "number of requests (importers: a cap, 0 for none)")
	fs.Float64Var(&g.Rate, "rate", 1, "mean arrival rate, jobs per second (importers: the target rate; 0 keeps the trace's)")
	rateScale := fs.Float64("rate-scale", 0, "importers: multiply the trace's rates (when --rate is 0)")
	fs.IntVar(&g.Checkpoints, "checkpoints", 20, "distinct base models")
	fs.Float64Var(&g.ZipfS, "zipf-s", 1, "Zipf exponent of model popularity")
	fs.DurationVar(&g.Drift, "drift", 0, "rotate popularity by one rank every DUR of trace time (0: none)")
	fs.Float64Var(&g.BurstFactor, "burst-factor", 4, "bursty: rate×F when on, rate/F when off")
	fs.DurationVar(&g.On, "on", time.Minute, "bursty: mean length of an on period")
	fs.DurationVar(&g.Off, "off", 4*time.Minute, "bursty: mean length of an off period")
	fs.DurationVar(&g.Period, "period", time.Hour, "diurnal: period of the rate's sine")
	fs.Float64Var(&g.Amplitude, "amplitude", 0.8, "diurnal: relative amplitude of the sine (0-1)")
	fs.Float64Var(&g.InteractiveFrac, "interactive", 0.5, "share of interactive jobs")
	fs.Int64Var(&g.DeadlineMS, "deadline-ms", 30000, "deadline of interactive jobs")
	servegen := fs.String("servegen", "", "servegen: a category folder of chunk-N-trace.csv files, e.g. ../shared/traces/servegen/reason/deepseek-r1")
	start := fs.Duration("start", 0, "servegen: where in the trace the span starts")
	duration := fs.Duration("duration", time.Hour, "servegen: the span's length (0: to the end)")
	mapping := fs.String("mapping", sim.MapStripe, "servegen: clients onto models by stripe or block")
	azure := fs.String("azure", "", "azure: the Azure LLM trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens)")
	seed := fs.Uint64("seed", 1, "seed of every draw")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("sim gen", "unexpected argument %q", pos[0])
	}
	g.Seed = *seed
	var models []sim.Model
	var reqs []sim.Request
	switch g.Kind {
	case "servegen":
		if *servegen == "" {
			return errors.New("sim gen: --kind servegen needs --servegen DIR")
		}
		models, reqs, err = sim.ImportServeGen(sim.ServeGenOptions{FS: os.DirFS(*servegen), Dir: ".", Start: *start, Duration: *duration,
			TargetRate: g.Rate, RateScale: *rateScale, Checkpoints: g.Checkpoints, Mapping: *mapping,
			InteractiveFrac: g.InteractiveFrac, DeadlineMS: g.DeadlineMS, MaxJobs: g.Jobs, Seed: g.Seed})
	case "azure":
		if *azure == "" {
			return errors.New("sim gen: --kind azure needs --azure FILE")
		}
		f, ferr := os.Open(*azure)
		if ferr != nil {
			return fmt.Errorf("sim gen: %w", ferr)
		}
		models, reqs, err = sim.ImportAzure(f, *azure, sim.AzureOptions{TargetRate: g.Rate, RateScale: *rateScale, Checkpoints: g.Checkpoints,
			ZipfS: g.ZipfS, InteractiveFrac: g.InteractiveFrac, DeadlineMS: g.DeadlineMS, MaxJobs: g.Jobs, Seed: g.Seed})
		f.Close()
	default:
		models, reqs, err = sim.Generate(g)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("sim gen: %w", err)
	}
	write := func(name string, fn func(*os.File) error) error {
		f, err := os.Create(filepath.Join(*out, name))
		if err != nil {
			return fmt.Errorf("sim gen: %w", err)
		}
		if err := fn(f); err != nil {
			f.Close()
			return fmt.Errorf("sim gen: write %s: %w", name, err)
		}
		return f.Close()
	}
	if err := write("models.csv", func(f *os.File) error { return sim.WriteModels(f, models) }); err != nil {
		return err
	}
	if err := write("trace.csv", func(f *os.File) error { return sim.WriteTrace(f, reqs) }); err != nil {
		return err
	}
	last := time.Duration(0)
	if len(reqs) > 0 {
		last = reqs[len(reqs)-1].Time
	}
	fmt.Fprintf(os.Stderr, "kiln sim gen: %d requests over %s, %s models → %s\n", len(reqs), last, strconv.Itoa(len(models)), *out)
	return nil
}
