package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// fakeWall keeps reports byte-identical: sim_speedup is 0 when the wall
// clock does not move.
func fakeWall() clock.Clock { return clock.NewFake(time.Unix(0, 0)) }

func node(devices, perDevice int, memory uint64, eviction string) Config {
	c := Config{WorkersPerDevice: perDevice, Cost: cost.Default(), RAMBytes: 16e9, DiskBytes: 100e9,
		RemoteBytesPerS: 1e9, Policies: policy.Config{Eviction: eviction, NativeBuiltins: true}}
	for i := 0; i < devices; i++ {
		c.Devices = append(c.Devices, device.SimDeviceConfig{Name: "g", MemoryBytes: memory, H2DBytesPerS: 20e9, ComputeFactor: 1})
	}
	return c
}

func run(t testing.TB, cfg Config, models []Model, reqs []Request) *Report {
	t.Helper()
	rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{Wall: fakeWall(), Seed: 7})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestTinyTraceMatchesCostModel(t *testing.T) {
	models := []Model{{ID: "checkpoints/a.safetensors", Bytes: 2e9, Family: "sd15"}}
	reqs := []Request{
		{Time: 0, Models: []string{"checkpoints/a.safetensors"}, Class: job.Batch},
		{Time: time.Second, Models: []string{"checkpoints/a.safetensors"}, Class: job.Batch},
	}
	rep := run(t, node(1, 1, 24e9, "lru"), models, reqs)

	c := cost.Default()
	// Cold load: remote 2e9 B at 1e9 B/s, disk 2e9 B at 1.7e9 B/s, then
	// host→device at half (pageable) of 20e9 B/s plus 0.5 s overhead.
	load := 2.0 + 2e9/1.7e9 + (0.5 + 2e9/10e9)
	// Compute: two prompts, 20 steps at 512², one decode.
	f := c.Families["sd15"]
	compute := 2*f.TextEncodeSeconds + 20*f.StepSeconds + f.DecodeSecondsPerMP*0.25
	done1 := load + compute
	lat2 := done1 + compute - 1 // waits for job 1, then a VRAM hit
	if !near(rep.TotalLoadTimeS, load) {
		t.Errorf("total load = %v, want %v", rep.TotalLoadTimeS, load)
	}
	if rep.Completed != 2 || rep.ColdLoads != 1 {
		t.Fatalf("completed %d, cold loads %d; want 2, 1", rep.Completed, rep.ColdLoads)
	}
	// Nearest rank over two values: p50 is the smaller, p95 the larger.
	lo, hi := min(done1, lat2), max(done1, lat2)
	if math.Abs(rep.P50LatencyS-lo) > 1e-6 || math.Abs(rep.P95LatencyS-hi) > 1e-6 {
		t.Errorf("p50/p95 = %v/%v, want %v/%v", rep.P50LatencyS, rep.P95LatencyS, lo, hi)
	}
	if math.Abs(rep.SimulatedS-(done1+compute)) > 1e-6 {
		t.Errorf("simulated %v, want %v", rep.SimulatedS, done1+compute)
	}
	if v := rep.Tiers["vram"]; v.Hits != 1 || v.Misses != 1 {
		t.Errorf("vram hits/misses = %d/%d, want 1/1", v.Hits, v.Misses)
	}
	if r := rep.Tiers["remote"]; r.Hits != 1 || r.Bytes != 2e9 {
		t.Errorf("remote fetches = %d (%d B), want 1 (2e9 B)", r.Hits, r.Bytes)
	}
	if !near(rep.OptimalLoadTimeS, load) {
		t.Errorf("optimal load = %v, want %v", rep.OptimalLoadTimeS, load)
	}
}

func TestEvictionUnderSmallLedger(t *testing.T) {
	models := []Model{
		{ID: "a", Bytes: 4e9, Family: "sdxl"}, {ID: "b", Bytes: 4e9, Family: "sdxl"}, {ID: "c", Bytes: 4e9, Family: "sdxl"},
	}
	var reqs []Request
	for i, m := range []string{"a", "b", "c", "a"} {
		reqs = append(reqs, Request{Time: time.Duration(i) * time.Minute, Models: []string{m}, Class: job.Batch})
	}
	// 12 GB: two of the three 4 GB models fit beside one job's 3.7 GB of
	// SDXL activations at 1024² (the ledger holds them while it runs).
	cfg := node(1, 1, 12e9, "lru")
	rep := run(t, cfg, models, reqs)
	v := rep.Tiers["vram"]
	if v.Misses != 4 || v.Hits != 0 || v.Evictions != 2 || v.EvictedBytes != 8e9 {
		t.Errorf("vram = %+v; want 4 misses, 0 hits, 2 evictions of 8e9 B", v)
	}
	// The second use of a comes from RAM: one RAM hit.
	if r := rep.Tiers["ram"]; r.Hits != 1 {
		t.Errorf("ram hits = %d, want 1", r.Hits)
	}
}

func TestPinnedModelsAreNotEvicted(t *testing.T) {
	// Two workers share a 16 GB device; job 1 holds an 8 GB model and
	// 3.7 GB of activations while it runs, so job 2's 4 GB model and its
	// activations (7.7 GB) must wait for it to finish.
	models := []Model{{ID: "big", Bytes: 8e9, Family: "flux"}, {ID: "small", Bytes: 4e9, Family: "sdxl"}}
	reqs := []Request{
		{Time: 0, Models: []string{"big"}, Class: job.Batch},
		{Time: time.Second, Models: []string{"small"}, Class: job.Batch},
	}
	s, err := newSimulator(context.Background(), node(1, 2, 16e9, "lru").withDefaults(), models, &Trace{Requests: reqs}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.host.Close()
	if err := s.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	j1, j2 := s.jobs[0], s.jobs[1]
	if j1.state != jobDone || j2.state != jobDone {
		t.Fatalf("states %v %v, want both done", j1.state, j2.state)
	}
	if j2.start < j1.done {
		t.Errorf("job 2 started at %v before job 1 released its pinned model at %v", j2.start, j1.done)
	}
}

func TestDeterminism(t *testing.T) {
	models, reqs, err := Generate(GenConfig{Kind: KindBursty, Jobs: 400, Rate: 0.5, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	cfg := node(2, 2, 24e9, "gdsf")
	// Batching and lookahead too: both add state (claimed followers,
	// transfers in flight) whose order must not depend on map iteration.
	cfg.Policies.Batching, cfg.Policies.Balancing, cfg.LookaheadJobs = "same-model", "affinity", 4
	a, _ := json.Marshal(run(t, cfg, models, reqs))
	b, _ := json.Marshal(run(t, cfg, models, reqs))
	if !bytes.Equal(a, b) {
		t.Fatalf("two runs with the same inputs differ:\n%s\n%s", a, b)
	}
	models2, reqs2, _ := Generate(GenConfig{Kind: KindBursty, Jobs: 400, Rate: 0.5, Seed: 3})
	c, _ := json.Marshal(run(t, cfg, models2, reqs2))
	if !bytes.Equal(a, c) {
		t.Fatal("the generator is not deterministic for a seed")
	}
}

func TestWASMAndNativeAgree(t *testing.T) {
	if testing.Short() || raceEnabled {
		// Compiling the WASM built-ins takes about a minute under -race.
		t.Skip("compiles the WASM built-ins")
	}
	models, reqs, _ := Generate(GenConfig{Jobs: 150, Rate: 0.5, Seed: 5})
	cfg := node(1, 2, 24e9, "gdsf")
	native := run(t, cfg, models, reqs)
	cfg.Policies.NativeBuiltins = false
	wasm := run(t, cfg, models, reqs)
	if wasm.Policies["eviction"] == native.Policies["eviction"] {
		t.Logf("eviction served as %s in both runs (no embedded WASM build?)", wasm.Policies["eviction"])
	}
	native.Policies, wasm.Policies = nil, nil
	a, _ := json.Marshal(native)
	b, _ := json.Marshal(wasm)
	if !bytes.Equal(a, b) {
		t.Errorf("WASM and native built-ins disagree:\n%s\n%s", a, b)
	}
}

func TestPoliciesAndOptimum(t *testing.T) {
	models, reqs, err := Generate(GenConfig{Kind: KindZipf, Jobs: 600, Rate: 0.4, Checkpoints: 24, ZipfS: 0.9, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]*Report{}
	for _, ev := range []string{"lru", "gdsf", "s3fifo"} {
		t.Run(ev, func(t *testing.T) {
			rep := run(t, node(2, 1, 24e9, ev), models, reqs)
			results[ev] = rep
			if rep.Policies["eviction"] == "" || !strings.HasPrefix(rep.Policies["eviction"], ev) {
				t.Errorf("eviction policy = %q, want %s", rep.Policies["eviction"], ev)
			}
			if rep.Tiers["vram"].Evictions == 0 {
				t.Errorf("no evictions: the workload does not exercise the policy")
			}
			if rep.OptimalLoadTimeS > rep.TotalLoadTimeS {
				t.Errorf("optimum %.1f s > %s's load time %.1f s", rep.OptimalLoadTimeS, ev, rep.TotalLoadTimeS)
			}
			if rep.GPUBusy <= 0 || rep.GPUBusy > 1 {
				t.Errorf("gpu_busy = %v outside (0, 1]", rep.GPUBusy)
			}
		})
	}
	if l, g := results["lru"], results["gdsf"]; l != nil && g != nil {
		if l.Tiers["vram"].Hits == g.Tiers["vram"].Hits && l.TotalLoadTimeS == g.TotalLoadTimeS {
			t.Errorf("lru and gdsf gave the same outcome (%d hits, %.1f s): the policy is not consulted", l.Tiers["vram"].Hits, l.TotalLoadTimeS)
		}
		t.Logf("vram hit ratio lru %.3f gdsf %.3f; load time lru %.0f s gdsf %.0f s optimum %.0f s",
			l.Tiers["vram"].HitRatio(), g.Tiers["vram"].HitRatio(), l.TotalLoadTimeS, g.TotalLoadTimeS, l.OptimalLoadTimeS)
	}
}

func TestJobTooLargeFails(t *testing.T) {
	models := []Model{{ID: "huge", Bytes: 30e9, Family: "flux"}, {ID: "ok", Bytes: 2e9, Family: "sd15"}}
	reqs := []Request{{Models: []string{"huge"}, Class: job.Batch}, {Models: []string{"ok"}, Class: job.Batch}}
	rep := run(t, node(1, 1, 24e9, "lru"), models, reqs)
	if rep.Failed != 1 || rep.Completed != 1 {
		t.Errorf("failed %d completed %d, want 1 and 1", rep.Failed, rep.Completed)
	}
}

func TestReadErrors(t *testing.T) {
	models := "model_id,bytes,family\na,100,sd15\n"
	for _, tc := range []struct {
		name, models, trace, want string
	}{
		{name: "models missing column", models: "model_id,bytes\na,1\n", want: "models.csv:1: column family: missing column"},
		{name: "models bad bytes", models: "model_id,bytes,family\na,x,sd15\n", want: `models.csv:2: column bytes: "x" is not a positive integer`},
		{name: "models duplicate", models: "model_id,bytes,family\na,1,sd15\na,2,sd15\n", want: `models.csv:3: column model_id: "a" repeats line 2`},
		{name: "models empty", models: "", want: "models.csv:1: empty file"},
		{name: "trace bad time", models: models, trace: "time_s,models,class,deadline_ms\n0,a,batch,0\nsoon,a,batch,0\n", want: `trace.csv:3: column time_s: "soon"`},
		{name: "trace unknown model", models: models, trace: "time_s,models,class,deadline_ms\n0,a;b,batch,0\n", want: `trace.csv:2: column models: unknown model "b"`},
		{name: "trace bad class", models: models, trace: "time_s,models,class,deadline_ms\n0,a,urgent,0\n", want: `trace.csv:2: column class: "urgent"`},
		{name: "trace bad deadline", models: models, trace: "time_s,models,class,deadline_ms\n0,a,batch,-5\n", want: `trace.csv:2: column deadline_ms: "-5"`},
		{name: "trace missing header", models: models, trace: "time_s,models\n0,a\n", want: "trace.csv:1: column class: missing column"},
		{name: "trace no models", models: models, trace: "time_s,models,class,deadline_ms\n0,,batch,0\n", want: "trace.csv:2: column models: no models"},
		{name: "trace missing workflow", models: models, trace: "time_s,models,class,deadline_ms,workflow\n0,a,batch,0,nope.json\n", want: "trace.csv:2: column workflow: read workflow"},
		{name: "trace quote", models: models, trace: "time_s,models,class,deadline_ms\n0,\"a,batch,0\n", want: "trace.csv:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := ReadModels(strings.NewReader(tc.models), "models.csv")
			if err == nil && tc.trace != "" {
				_, err = ReadTrace(strings.NewReader(tc.trace), TraceOptions{File: "trace.csv", Models: ms, WorkflowDir: t.TempDir()})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("error %v is not a *ParseError", err)
			}
		})
	}
}

func TestWorkflowColumn(t *testing.T) {
	ms, err := ReadModels(strings.NewReader("model_id,bytes,family\ncheckpoints/sdxl.safetensors,6940000000,sdxl\n"), "m.csv")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ReadTrace(strings.NewReader("time_s,models,class,deadline_ms,workflow\n0,checkpoints/sdxl.safetensors,interactive,9000,sdxl.json\n"),
		TraceOptions{File: "t.csv", Models: ms, WorkflowDir: "testdata"})
	if err != nil {
		t.Fatal(err)
	}
	p := tr.Requests[0].Samplers
	if len(p) != 1 || p[0].Steps != 30 || p[0].Width != 1024 {
		t.Fatalf("samplers = %+v, want one of 30 steps at 1024", p)
	}
	rep := run(t, node(1, 1, 24e9, "lru"), ms, tr.Requests)
	c := cost.Default()
	want := c.JobEstimate(cost.TextToImage("sdxl", 30, 1024, 1024, 1), cost.Device{ComputeFactor: 1}).Seconds() + rep.TotalLoadTimeS
	if math.Abs(rep.P50LatencyS-want) > 1e-6 {
		t.Errorf("latency %v, want %v", rep.P50LatencyS, want)
	}
}

func TestGenerateSizes(t *testing.T) {
	for _, m := range Catalog(16, 1) {
		var lo, hi float64
		switch m.Family {
		case "lora":
			lo, hi = 40e6, 800e6
		case "vae":
			lo, hi = 160e6, 335e6
		case "controlnet":
			lo, hi = 0.7e9, 2.5e9
		case "upscaler":
			lo, hi = 50e6, 70e6
		case "flux":
			lo, hi = 11e9, 24e9
		case "sd15":
			lo, hi = 1.9e9, 2.2e9
		case "sdxl":
			lo, hi = 6.8e9, 7e9
		case "sd3":
			lo, hi = 5.9e9, 6.1e9
		}
		if b := float64(m.Bytes); b < lo || b > hi {
			t.Errorf("%s (%s) = %d B, outside [%g, %g]", m.ID, m.Family, m.Bytes, lo, hi)
		}
	}
	if _, _, err := Generate(GenConfig{Kind: "spiky"}); err == nil {
		t.Error("unknown kind accepted")
	}
}

// BenchmarkRun replays 10,000 jobs on 4 GPUs with 2 workers each and
// reports simulated seconds per wall second.
func BenchmarkRun(b *testing.B) {
	models, reqs, err := Generate(GenConfig{Kind: KindZipf, Jobs: 10000, Rate: 1.5, Checkpoints: 30, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	cfg := node(4, 2, 24e9, "lru")
	var speed float64
	for b.Loop() {
		rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		speed = rep.SimSpeedup
	}
	b.ReportMetric(speed, "sim_speedup")
}

func TestBatchFusedAndSequential(t *testing.T) {
	models := []Model{{ID: "a", Bytes: 2e9, Family: "sd15"}}
	var reqs []Request
	for range 3 {
		reqs = append(reqs, Request{Models: []string{"a"}, Class: job.Batch})
	}
	c := cost.Default()
	load := 2.0 + 2e9/1.7e9 + (0.5 + 2e9/10e9) // as in TestTinyTraceMatchesCostModel
	one := c.JobEstimate(cost.TextToImage("sd15", 20, 512, 512, 1), cost.Device{ComputeFactor: 1}).Seconds()
	// Fused: one run of batch 3 (six prompts, a batch-3 sampler and decode).
	three := cost.TextToImage("sd15", 20, 512, 512, 3)
	three.TextEncodes = 6
	fused := c.JobEstimate(three, cost.Device{ComputeFactor: 1}).Seconds()
	if fused >= 3*one {
		t.Fatalf("fused batch of 3 takes %v s, no faster than 3 × %v s: the cost model has no batch efficiency", fused, one)
	}
	for _, tc := range []struct {
		exec          string
		p50, makespan float64
	}{
		{BatchFused, load + fused, load + fused},
		{BatchSequential, load + 2*one, load + 3*one},
	} {
		t.Run(tc.exec, func(t *testing.T) {
			cfg := node(1, 1, 24e9, "lru")
			cfg.Policies.Batching, cfg.BatchExecution = "same-model", tc.exec
			rep := run(t, cfg, models, reqs)
			if rep.Batching.Batches != 1 || rep.Batching.BatchedJobs != 3 || rep.ColdLoads != 1 {
				t.Fatalf("batches %+v, cold loads %d; want one batch of 3 and one load", rep.Batching, rep.ColdLoads)
			}
			if math.Abs(rep.P50LatencyS-tc.p50) > 1e-6 || math.Abs(rep.SimulatedS-tc.makespan) > 1e-6 {
				t.Errorf("p50 %v makespan %v; want %v %v", rep.P50LatencyS, rep.SimulatedS, tc.p50, tc.makespan)
			}
			// The followers found the model warm.
			if v := rep.Tiers["vram"]; v.Hits != 2 || v.Misses != 1 {
				t.Errorf("vram hits/misses %d/%d, want 2/1", v.Hits, v.Misses)
			}
		})
	}
	// Without a batching policy every job runs alone.
	rep := run(t, node(1, 1, 24e9, "lru"), models, reqs)
	if rep.Batching.Batches != 0 || math.Abs(rep.SimulatedS-(load+3*one)) > 1e-6 {
		t.Errorf("no batching: %+v, makespan %v", rep.Batching, rep.SimulatedS)
	}
}

func TestLookaheadPrefetch(t *testing.T) {
	// Job 1 loads a and computes; job 2, queued behind it, needs b. The
	// lookahead starts b climbing to RAM when job 2 arrives, so when job 2
	// starts it waits only for the rest of that transfer.
	models := []Model{{ID: "a", Bytes: 2e9, Family: "sd15"}, {ID: "b", Bytes: 6e9, Family: "sdxl"}}
	reqs := []Request{
		{Time: 0, Models: []string{"a"}, Class: job.Batch},
		{Time: time.Millisecond, Models: []string{"b"}, Class: job.Batch},
	}
	cfg := node(1, 1, 24e9, "lru")
	cfg.LookaheadJobs = 4
	rep := run(t, cfg, models, reqs)
	c := cost.Default()
	dev := cost.Device{ComputeFactor: 1}
	loadA := 2.0 + 2e9/1.7e9 + (0.5 + 2e9/10e9)
	done1 := loadA + c.JobEstimate(cost.TextToImage("sd15", 20, 512, 512, 1), dev).Seconds()
	climbB := 6e9/1e9 + 6e9/1.7e9 // source, then disk: ends at 0.001 + climbB
	transferB := 0.5 + 6e9/10e9
	p := rep.Prefetch
	if p == nil || p.Issued != 1 || p.Used != 1 || p.Wasted != 0 || p.IssuedBytes != 6e9 {
		t.Fatalf("prefetch %+v, want one issued and used", p)
	}
	if want := done1 - 0.001; math.Abs(p.LoadTimeSavedS-want) > 1e-6 {
		t.Errorf("saved %v s, want %v (the climb's part done before job 2 started)", p.LoadTimeSavedS, want)
	}
	if want := loadA + (0.001 + climbB - done1) + transferB; math.Abs(rep.TotalLoadTimeS-want) > 1e-6 {
		t.Errorf("total load %v, want %v", rep.TotalLoadTimeS, want)
	}
	cfg.LookaheadJobs = 0
	if rep := run(t, cfg, models, reqs); rep.Prefetch != nil {
		t.Errorf("lookahead off, prefetch %+v", rep.Prefetch)
	}
}

func TestOptimumCountsEachWorkersCopy(t *testing.T) {
	// Two workers of one device start a job on a at once: each loads its
	// own copy, the first from the source, the second from RAM. No
	// eviction policy could do better, so the per-worker optimum equals the
	// run; one copy per device would need only the first load.
	models := []Model{{ID: "a", Bytes: 3e9, Family: "sd15"}}
	reqs := []Request{{Models: []string{"a"}, Class: job.Batch}, {Models: []string{"a"}, Class: job.Batch}}
	rep := run(t, node(1, 2, 24e9, "lru"), models, reqs)
	cold := 3.0 + 3e9/1.7e9 + (0.5 + 3e9/10e9)
	ram := 0.5 + 3e9/10e9
	if rep.ColdLoads != 2 || !near(rep.TotalLoadTimeS, cold+ram) {
		t.Fatalf("loads %d taking %v s, want 2 taking %v", rep.ColdLoads, rep.TotalLoadTimeS, cold+ram)
	}
	if !near(rep.OptimalLoadTimeS, cold+ram) || !near(rep.OptimalSharedLoadTimeS, cold) {
		t.Errorf("optimum %v (want %v), shared %v (want %v)", rep.OptimalLoadTimeS, cold+ram, rep.OptimalSharedLoadTimeS, cold)
	}
}

func TestLookaheadAsksTheEvictionPolicy(t *testing.T) {
	// A long job holds the only worker; jobs on b and then c queue behind
	// it, and RAM holds one of the two. The lookahead pulls b; once b is
	// in, lru's prefetch choice (dispatch.Core.Lookahead, as live) leaves c
	// out, since it does not fit the room b leaves, and pulls it only when
	// b's job has started. Pulling every model would have evicted b, unused,
	// to make room for c. With lru's prefetch off nothing is pulled.
	models := []Model{{ID: "a", Bytes: 2e9, Family: "sd15"}, {ID: "b", Bytes: 6e9, Family: "sdxl"}, {ID: "c", Bytes: 6e9, Family: "sdxl"}}
	reqs := []Request{
		{Models: []string{"a"}, Class: job.Batch, Samplers: []workflow.SamplerParams{{Steps: 2000, Width: 512, Height: 512, BatchSize: 1}}},
		{Time: time.Millisecond, Models: []string{"b"}, Class: job.Batch},
		{Time: 2 * time.Millisecond, Models: []string{"c"}, Class: job.Batch},
	}
	for _, tc := range []struct {
		prefetch           float64
		issued, used, lost int64
	}{
		{prefetch: 1, issued: 2, used: 2},
		{prefetch: 0},
	} {
		cfg := node(1, 1, 24e9, "lru")
		cfg.RAMBytes, cfg.LookaheadJobs = 8e9, 4
		cfg.Params = map[string]map[string]float64{"eviction": {"prefetch": tc.prefetch}}
		p := run(t, cfg, models, reqs).Prefetch
		if p == nil || p.Issued != tc.issued || p.Used != tc.used || p.Wasted != tc.lost {
			t.Errorf("prefetch %v: %+v; want issued %d, used %d, wasted %d", tc.prefetch, p, tc.issued, tc.used, tc.lost)
		}
	}
}
