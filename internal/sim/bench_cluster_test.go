package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/config"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// The benchmarks of BENCHMARKS.md's sections "Big models on 24 and 48 GiB
// GPUs" (make bench-stages) and "Routing across nodes" (make
// bench-routing). Each runs only when its variable names the markdown file
// to write, and compares against its baseline in the same run, over seeds.

// bigModels are Flux-dev (fp8 diffusion model, as ComfyUI's Flux workflow
// ships it), SD3.5-large (its MMDiT checkpoint with the VAE inside, and
// the three text encoders of TripleCLIPLoader; T5 and CLIP-L shared with
// Flux) and SDXL, at their files' sizes.
func bigModels() []Model {
	return []Model{
		{ID: "clip_l.safetensors", Bytes: 246_144_152, Family: workflow.FamilyTextEncoder},
		{ID: "clip_g.safetensors", Bytes: 1_389_382_176, Family: workflow.FamilyTextEncoder},
		{ID: "t5xxl_fp16.safetensors", Bytes: 9_787_841_024, Family: workflow.FamilyTextEncoder},
		{ID: "flux1-dev-fp8.safetensors", Bytes: 11_901_517_952, Family: workflow.FamilyFlux},
		{ID: "ae.safetensors", Bytes: 335_304_388, Family: workflow.FamilyVAE},
		{ID: "sd3.5_large.safetensors", Bytes: 16_460_379_262, Family: workflow.FamilySD3},
		{ID: "sd_xl_base_1.0.safetensors", Bytes: 6_938_078_334, Family: workflow.FamilySDXL},
	}
}

// bigTrace is n Poisson arrivals at rate jobs/s: 30% Flux-dev, 30%
// SD3.5-large, 40% SDXL; a third interactive.
func bigTrace(n int, rate float64, seed uint64) []Request {
	rng := rand.New(rand.NewPCG(seed, 0x626967))
	flux := []string{"clip_l.safetensors", "t5xxl_fp16.safetensors", "flux1-dev-fp8.safetensors", "ae.safetensors"}
	sd35 := []string{"clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors", "sd3.5_large.safetensors"}
	sdxl := []string{"sd_xl_base_1.0.safetensors"}
	var reqs []Request
	var t float64
	for range n {
		t += rng.ExpFloat64() / rate
		r := Request{Time: time.Duration(t * float64(time.Second)), Class: job.Batch}
		switch u := rng.Float64(); {
		case u < 0.3:
			r.Models = flux
		case u < 0.6:
			r.Models = sd35
		default:
			r.Models = sdxl
		}
		if rng.IntN(3) == 0 {
			r.Class = job.Interactive
		}
		reqs = append(reqs, r)
	}
	return reqs
}

// defaultNode is the default config's node (2 GPUs × 2 workers, 20%
// headroom, worker contexts, its policies), with each GPU's memory set.
func defaultNode(t testing.TB, memory uint64, sets ...string) Config {
	t.Helper()
	kc, err := config.Load(config.LoadOptions{Sets: append([]string{"policies.native_builtins=true"}, sets...)})
	if err != nil {
		t.Fatal(err)
	}
	c := fromKernelConfig(kc)
	for i := range c.Devices {
		c.Devices[i].MemoryBytes = memory
	}
	return c
}

// meanCI is a mean over seeds with a 95% Student-t interval, one decimal.
func meanCI(xs []float64) string { return meanCIDigits(xs, 1) }

// count is how many of xs equal x.
func count(xs []float64, x float64) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

// meanCI2 is meanCI with two decimals, for rates.
func meanCI2(xs []float64) string { return meanCIDigits(xs, 2) }

func meanCIDigits(xs []float64, digits int) string {
	m := mean(xs)
	if len(xs) < 2 {
		return fmt.Sprintf("%.*f", digits, m)
	}
	var v float64
	for _, x := range xs {
		v += (x - m) * (x - m)
	}
	half := t975[min(len(xs)-1, len(t975)-1)] * math.Sqrt(v/float64(len(xs)-1)/float64(len(xs)))
	return fmt.Sprintf("%.*f ± %.*f", digits, m, digits, half)
}

// t975 is Student's t at 0.975 by degrees of freedom (index 0 unused).
var t975 = []float64{math.NaN(), 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228}

func benchOut(t *testing.T, env string) string {
	out := os.Getenv(env)
	if out == "" {
		t.Skipf("a benchmark: %s=FILE.md runs it and writes its table there", env)
	}
	return out
}

// TestBenchStages: the big-model workload on the default node with 24 and
// 48 GiB GPUs, admitted by stage (kiln) against admitted by the sum of
// each job's models (sim.whole_job_admission, the node before stages,
// which refuses what no device holds whole), over 3 seeds.
func TestBenchStages(t *testing.T) {
	out := benchOut(t, "KILN_BENCH_STAGES")
	const jobs, rate = 1500, 0.12
	seeds := []uint64{1, 2, 3}
	var b strings.Builder
	fmt.Fprintf(&b, "%d jobs per run, Poisson at %.2f jobs/s (30%% Flux-dev fp8, 30%% SD3.5-large, 40%% SDXL), the default node (2 GPUs × 2 workers, 20%% headroom, 512 MiB worker contexts), seeds %v; mean ± 95%% t-interval over the seeds.\n\n", jobs, rate, seeds)
	b.WriteString("| GPU | admission | completed | refused | Flux done | SD3.5 done | p95 latency (s) | throughput (jobs/h) | cold loads | GPU busy |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, gpu := range []uint64{24, 48} {
		for _, whole := range []bool{false, true} {
			var done, refused, flux, sd35, p95, thr, cold, busy []float64
			for _, seed := range seeds {
				reqs := bigTrace(jobs, rate, seed)
				cfg := defaultNode(t, gpu<<30)
				cfg.WholeJobAdmission = whole
				s, err := newSimulator(context.Background(), cfg.withDefaults(), bigModels(), &Trace{Requests: reqs}, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.run(context.Background()); err != nil {
					t.Fatal(err)
				}
				rep := s.report(time.Second, int64(seed))
				s.host.Close()
				var nf, ns float64
				for _, j := range s.jobs {
					if j.state != jobDone {
						continue
					}
					if slices.Contains(j.models, "flux1-dev-fp8.safetensors") {
						nf++
					}
					if slices.Contains(j.models, "sd3.5_large.safetensors") {
						ns++
					}
				}
				done = append(done, float64(rep.Completed))
				refused = append(refused, float64(rep.Failed))
				flux, sd35 = append(flux, nf), append(sd35, ns)
				p95 = append(p95, rep.P95LatencyS)
				thr = append(thr, float64(rep.Completed)/rep.SimulatedS*3600)
				cold = append(cold, float64(rep.ColdLoads))
				busy = append(busy, rep.GPUBusy)
			}
			name := "by stage (kiln)"
			if whole {
				name = "whole job (baseline)"
			}
			fmt.Fprintf(&b, "| %d GiB | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", gpu, name, meanCI(done), meanCI(refused), meanCI(flux),
				meanCI(sd35), meanCI(p95), meanCI(thr), meanCI(cold), fmt.Sprintf("%.3f", mean(busy)))
		}
	}
	t.Log("\n" + b.String())
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mean(xs []float64) float64 {
	var m float64
	for _, x := range xs {
		m += x
	}
	return m / float64(len(xs))
}

// TestBenchRouting: a zipf workload over many checkpoints on clusters of 4
// and 16 nodes (default node with 48 GiB GPUs, so that every generated
// model fits), routed by random, least-loaded and affinity, over 3 seeds
// (of the trace and of the routing words): cold loads, load time, p95 and
// GPU busy; the same on the trace-derived workloads when the shared traces
// are there; then each policy's throughput at the p95 SLO on every
// workload. KILN_BENCH_ROUTING_NODES=4,16,64 picks the sizes of the first
// tables, KILN_BENCH_ROUTING_SLO_NODES (default 16) those of the last.
func TestBenchRouting(t *testing.T) {
	out := benchOut(t, "KILN_BENCH_ROUTING")
	sizes := benchSizes(t, "KILN_BENCH_ROUTING_NODES", []int{4, 16})
	sloSizes := benchSizes(t, "KILN_BENCH_ROUTING_SLO_NODES", []int{16})
	seeds := []uint64{1, 2, 3}
	workloads := routingWorkloads(t)
	var b strings.Builder
	for i, w := range workloads {
		if i == 0 {
			fmt.Fprintf(&b, "Per node: 150 jobs, 0.25 jobs/s offered; %s; the default node (2 GPUs × 2 workers) with 48 GiB GPUs and 40 GB of RAM tier; 2 ms network hop; seeds %v; mean ± 95%% t-interval over the seeds.\n\n", w.name, seeds)
		} else {
			fmt.Fprintf(&b, "\n%s; the node and network as above; seeds %v.\n\n", w.name, seeds)
		}
		routingTable(t, &b, w.name, sizes, seeds, func(n int, seed uint64) ([]Model, []Request, error) {
			return w.make(n, seed, 0.25, 150)
		})
	}
	routingSLOTable(t, &b, workloads, sloSizes, seeds)
	t.Log("\n" + b.String())
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// benchSizes reads a comma-separated list of cluster sizes from env.
func benchSizes(t *testing.T, env string, def []int) []int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	var sizes []int
	for _, f := range strings.Split(v, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n < 2 {
			t.Fatalf("%s: %q", env, f)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// routingWorkload makes a cluster workload of n nodes: jobsPerNode jobs per
// node arriving at ratePerNode jobs/s per node.
type routingWorkload struct {
	name string
	make func(n int, seed uint64, ratePerNode float64, jobsPerNode int) ([]Model, []Request, error)
}

// routingWorkloads are kiln sim gen's zipf workload and, when the shared
// folder's traces are there, the ServeGen and Azure ones as `kiln sim
// bench` imports them: the traces' own arrival shapes (ServeGen's
// windows, bursty per client; Azure's conversation arrivals), models as
// the importers map them onto max(24, 6 per node) checkpoints. Seeds vary
// the routing words and, for zipf and Azure, the models' draw; a ServeGen
// span is its trace.
func routingWorkloads(t *testing.T) []routingWorkload {
	ws := []routingWorkload{{"zipf (s = 1) over 6 checkpoints per node (at least 24), LoRAs, ControlNets and upscalers as `kiln sim gen` draws them",
		func(n int, seed uint64, rate float64, jobs int) ([]Model, []Request, error) {
			return Generate(GenConfig{Kind: KindZipf, Jobs: jobs * n, Rate: rate * float64(n), Checkpoints: max(24, 6*n), Seed: seed})
		}}}
	traces := "../../../shared/traces"
	if v := os.Getenv("KILN_TRACES"); v != "" {
		traces = v // make bench-routing: the Makefile's TRACES
	}
	if _, err := os.Stat(traces + "/servegen"); err != nil {
		t.Logf("no shared traces at %s (KILN_TRACES): the trace-derived routing tables are left out", traces)
		return ws
	}
	fsys := os.DirFS(traces)
	return append(ws,
		routingWorkload{"ServeGen multimodal (mm-image), clients striped over checkpoints", func(n int, seed uint64, rate float64, jobs int) ([]Model, []Request, error) {
			return ImportServeGen(ServeGenOptions{FS: fsys, Dir: "servegen/multimodal/mm-image", Start: 12 * time.Hour,
				TargetRate: rate * float64(n), Checkpoints: max(24, 6*n), Mapping: MapStripe, MaxJobs: jobs * n, Seed: seed})
		}},
		routingWorkload{"Azure LLM 2023 conversation arrivals, Zipf(1.0) over checkpoints", func(n int, seed uint64, rate float64, jobs int) ([]Model, []Request, error) {
			f, err := fsys.Open("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
			if err != nil {
				return nil, nil, err
			}
			defer f.Close()
			return ImportAzure(f, "AzureLLMInferenceTrace_conv.csv", AzureOptions{TargetRate: rate * float64(n),
				Checkpoints: max(24, 6*n), ZipfS: 1, MaxJobs: jobs * n, Seed: seed})
		}},
	)
}

// routingSLORates are the per-node arrival rates (jobs/s) the SLO table
// sweeps, each for 600 s of arrivals.
var routingSLORates = []float64{0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6}

// routingSLO is the cluster table's p95 SLO: twice the single node's
// (benchSLO), because in these clusters every node's first loads come from
// the remote tier and no policy's p95 is within 30 s even at the lowest
// rate (zipf at 4 nodes, 0.1 jobs/s per node: random 47 s, affinity 37 s).
const routingSLO = 2 * benchSLO

// routingSLOTable writes each routing policy's throughput at the p95 SLO
// (routingSLO), as the single node's bench finds it: per seed, the highest swept
// per-node rate whose p95 stays within the SLO with no failed job (the
// sweep stops at the first rate past it), and the cluster's completed
// jobs per second there.
func routingSLOTable(t *testing.T, b *strings.Builder, workloads []routingWorkload, sizes []int, seeds []uint64) {
	fmt.Fprintf(b, "\n**Throughput at the p95 SLO (%s)**: per seed, the highest per-node rate of %v jobs/s (600 s of arrivals each) whose p95 stays within the SLO with no failed job, the sweep stopping at the first rate past it; the cluster's throughput there (completed jobs/s); mean ± 95%% t-interval over seeds %v. The node and network as above. The SLO is twice the single node's: every node's first loads come from the remote tier, and at the lowest rate no policy's p95 is within %s.\n\n", routingSLO, routingSLORates, seeds, benchSLO)
	b.WriteString("| workload | nodes | routing | highest rate within SLO (per node) | throughput there (jobs/s, cluster) | vs random |\n|---|---|---|---|---|---|\n")
	for _, w := range workloads {
		for _, n := range sizes {
			var randomThr float64
			for _, routing := range []string{"random", "least-loaded", "affinity"} {
				var best, thr []float64
				for _, seed := range seeds {
					var rate, through float64
					for _, r := range routingSLORates {
						models, reqs, err := w.make(n, seed, r, int(r*600))
						if err != nil {
							t.Fatal(err)
						}
						node := defaultNode(t, 48<<30, "policies.routing="+routing)
						node.RAMBytes = 40e9
						rep, err := RunCluster(context.Background(), ClusterConfig{Node: node, Nodes: n, NetworkDelay: 2 * time.Millisecond},
							models, &Trace{Requests: reqs}, Options{Wall: fakeWall(), Seed: int64(seed)})
						if err != nil {
							t.Fatal(err)
						}
						if rep.P95LatencyS > routingSLO.Seconds() || rep.Failed > 0 {
							break
						}
						rate, through = r, float64(rep.Completed)/rep.SimulatedS
					}
					best, thr = append(best, rate), append(thr, through)
				}
				vs := "—"
				if routing == "random" {
					randomThr = mean(thr)
				} else if randomThr > 0 {
					vs = fmt.Sprintf("%.2f×", mean(thr)/randomThr)
				}
				rate := meanCI2(best)
				if top := routingSLORates[len(routingSLORates)-1]; slices.Contains(best, top) {
					// The sweep found no limit for this seed: a lower bound.
					rate += fmt.Sprintf(" (%d of %d seeds at the sweep's top)", count(best, top), len(best))
				}
				short, _, _ := strings.Cut(w.name, " ")
				fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s |\n", short, n, routing, rate, meanCI2(thr), vs)
				t.Logf("SLO sweep %s: %d nodes, %s done", short, n, routing)
			}
		}
	}
}

// routingTable writes one routing table: for each cluster size and routing
// policy, the runs of gen's workload over the seeds (of the trace and of
// the routing words) on the default node with 48 GiB GPUs and a 40 GB RAM
// tier, 2 ms a network hop; means with their 95% t-intervals.
func routingTable(t *testing.T, b *strings.Builder, workload string, sizes []int, seeds []uint64,
	gen func(n int, seed uint64) ([]Model, []Request, error)) {
	b.WriteString("| nodes | routing | cold loads | load time (s) | p95 latency (s) | mean latency (s) | GPU busy | completed |\n|---|---|---|---|---|---|---|---|\n")
	for _, n := range sizes {
		for _, routing := range []string{"random", "least-loaded", "affinity"} {
			var cold, load, p95, meanLat, busy, done []float64
			for _, seed := range seeds {
				models, reqs, err := gen(n, seed)
				if err != nil {
					t.Fatal(err)
				}
				node := defaultNode(t, 48<<30, "policies.routing="+routing)
				node.RAMBytes = 40e9
				rep, err := RunCluster(context.Background(), ClusterConfig{Node: node, Nodes: n, NetworkDelay: 2 * time.Millisecond},
					models, &Trace{Requests: reqs}, Options{Wall: fakeWall(), Seed: int64(seed)})
				if err != nil {
					t.Fatal(err)
				}
				cold = append(cold, float64(rep.ColdLoads))
				load = append(load, rep.TotalLoadTimeS)
				p95 = append(p95, rep.P95LatencyS)
				meanLat = append(meanLat, rep.MeanLatencyS)
				busy = append(busy, rep.GPUBusy)
				done = append(done, float64(rep.Completed))
			}
			fmt.Fprintf(b, "| %d | %s | %s | %s | %s | %s | %.3f | %s |\n", n, routing, meanCI(cold), meanCI(load), meanCI(p95), meanCI(meanLat), mean(busy), meanCI(done))
			t.Logf("%s: %d nodes, %s done", workload, n, routing)
		}
	}
}
