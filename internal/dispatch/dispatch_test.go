package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	"github.com/kiln-gpu/kiln/internal/predict"
	"github.com/kiln-gpu/kiln/internal/worker"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// The dispatcher tests run real worker processes: the test binary itself,
// re-executed with KILN_TEST_WORKER set, serves the worker protocol.
func TestMain(m *testing.M) {
	if os.Getenv("KILN_TEST_WORKER") != "" {
		if err := wire.ServeFD3(&stubWorker{crashMarker: os.Getenv("KILN_TEST_CRASH_ONCE"), stages: os.Getenv("KILN_TEST_STAGES")}); err != nil {
			fmt.Fprintln(os.Stderr, "stub worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// stubWorker loads anything, runs for a few milliseconds with progress, and
// crashes once mid-run when crashMarker names a file that does not exist yet.
// With stages set (KILN_TEST_STAGES) it speaks stages: it asks the kernel
// for each stage after the first (wire.AwaitStage) and checks that the
// stage's models are loaded; a value other than "on" names a gate file
// that each ask waits for, so that a test can line runs up at a stage
// boundary.
type stubWorker struct {
	crashMarker string
	stages      string
	mu          sync.Mutex
	loaded      map[string]bool
}

func (s *stubWorker) Hello(context.Context, wire.HelloRequest) (wire.HelloReply, error) {
	rep := wire.HelloReply{Protocol: wire.ProtocolVersion, Name: "stub", PID: os.Getpid()}
	if s.stages != "" {
		rep.Capabilities = []string{wire.CapabilityStages}
	}
	return rep, nil
}

// checkLoaded fails a run whose models are not all loaded.
func (s *stubWorker) checkLoaded(models []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range models {
		if !s.loaded[m] {
			return wire.Errorf(wire.ErrCodeNotLoaded, "%s is not loaded", m)
		}
	}
	return nil
}

// waitFile waits until path exists or ctx ends.
func waitFile(ctx context.Context, path string) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (s *stubWorker) Load(_ context.Context, r wire.LoadRequest) (wire.LoadReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loaded == nil {
		s.loaded = map[string]bool{}
	}
	s.loaded[r.Model] = true
	return wire.LoadReply{Model: r.Model}, nil
}

func (s *stubWorker) Unload(_ context.Context, r wire.UnloadRequest) (wire.UnloadReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loaded[r.Model] {
		return wire.UnloadReply{}, wire.Errorf(wire.ErrCodeNotLoaded, "%s", r.Model)
	}
	delete(s.loaded, r.Model)
	return wire.UnloadReply{Model: r.Model}, nil
}

func (s *stubWorker) Run(ctx context.Context, r wire.RunRequest, progress func(wire.Progress)) (wire.RunResult, error) {
	first := r.Models
	if len(r.Stages) > 0 {
		first = r.Stages[0].Models
	}
	if err := s.checkLoaded(first); err != nil {
		return wire.RunResult{}, err
	}
	for k := 1; k < len(r.Stages); k++ {
		progress(wire.Progress{JobID: r.JobID, Node: r.Stages[k-1].Nodes[0], Value: k, Max: len(r.Stages)})
		if s.stages != "on" {
			if err := waitFile(ctx, s.stages); err != nil {
				return wire.RunResult{}, err
			}
		}
		if err := wire.AwaitStage(ctx, k, r.Stages[k].Nodes[0]); err != nil {
			return wire.RunResult{}, err
		}
		if err := s.checkLoaded(r.Stages[k].Models); err != nil {
			return wire.RunResult{}, fmt.Errorf("stage %d: %w", k, err)
		}
	}
	if steps, _ := r.Workflow["fail"].(bool); steps {
		return wire.RunResult{}, wire.Errorf(wire.ErrCodeFailed, "the graph asked to fail")
	}
	// block_once names a marker file: the first run that creates it
	// reports one step and then runs until it is cancelled; later runs
	// find it and run normally. gate names a file the run waits for.
	if marker, _ := r.Workflow["block_once"].(string); marker != "" {
		if f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL, 0o644); err == nil {
			f.Close()
			progress(wire.Progress{JobID: r.JobID, Node: "3", Value: 1, Max: 3})
			<-ctx.Done()
			return wire.RunResult{}, ctx.Err()
		}
	}
	if gate, _ := r.Workflow["gate"].(string); gate != "" {
		progress(wire.Progress{JobID: r.JobID, Node: "3", Value: 0, Max: 3})
		if err := waitFile(ctx, gate); err != nil {
			return wire.RunResult{}, err
		}
	}
	for step := 1; step <= 3; step++ {
		progress(wire.Progress{JobID: r.JobID, Node: "3", Value: step, Max: 3})
		if step == 2 && s.crashMarker != "" {
			if f, err := os.OpenFile(s.crashMarker, os.O_CREATE|os.O_EXCL, 0o644); err == nil {
				f.Close()
				os.Exit(3)
			}
		}
		d := 5 * time.Millisecond
		if slow, _ := r.Workflow["slow"].(bool); slow {
			d = time.Second
		}
		select {
		case <-ctx.Done():
			return wire.RunResult{}, ctx.Err()
		case <-time.After(d):
		}
	}
	return wire.RunResult{JobID: r.JobID, Outputs: []wire.Output{{Node: "9", Filename: r.JobID + ".png", Subfolder: r.JobID, Type: "output"}}}, nil
}

func (s *stubWorker) Stats(context.Context) (wire.StatsReply, error) { return wire.StatsReply{}, nil }

// rig is a dispatcher over a real store, real worker processes, simulated
// devices and a model store of synthetic files.
type rig struct {
	t      *testing.T
	store  *job.Store
	d      *Dispatcher
	pool   *worker.Pool
	set    *device.Set
	events <-chan job.Event
}

const gib = 1 << 30

func newRig(t *testing.T, deviceMemory uint64, perDevice int, models map[string]int64, env ...string) *rig {
	t.Helper()
	return newRigWith(t, rigConfig{deviceMemory: deviceMemory, perDevice: perDevice, models: models, env: env})
}

// rigConfig describes a rig. policies (Scheduler, Balancer, Evictor,
// Batcher) replace the native ones, and its Clock, Hooks, Preemption,
// PreemptMinRun and VRAMWait are the dispatcher's (the store shares the clock); before, when set, runs once every
// worker is ready and before the dispatcher starts, so that it can fill
// the queue and the first dispatch round sees all of it.
type rigConfig struct {
	deviceMemory uint64
	perDevice    int
	models       map[string]int64
	env          []string
	policies     Options
	before       func(r *rig)
}

func newRigWith(t *testing.T, rc rigConfig) *rig {
	t.Helper()
	deviceMemory, perDevice, models, env := rc.deviceMemory, rc.perDevice, rc.models, rc.env
	dir := t.TempDir()
	t.Setenv("KILN_TEST_WORKER", "1")
	for i := 0; i+1 < len(env); i += 2 {
		t.Setenv(env[i], env[i+1])
	}
	for id, nominal := range models {
		spec := modelfile.Spec{ID: id, Family: "sdxl", NominalBytes: nominal, Scale: 0.00001, Seed: 1}
		path := filepath.Join(dir, "models", filepath.FromSlash(id))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := modelfile.SynthFile(path, spec); err != nil {
			t.Fatal(err)
		}
	}
	log := zerolog.Nop()
	set, err := device.Open(device.Config{Backend: "sim", Headroom: 0.2, Simulated: []device.SimDeviceConfig{
		{Name: "sim-0", MemoryBytes: deviceMemory, H2DBytesPerS: 25e9, ComputeFactor: 1},
	}}, log)
	if err != nil {
		t.Fatal(err)
	}
	clk := rc.policies.Clock
	if clk == nil {
		clk = clock.Real()
	}
	store, err := job.Open(filepath.Join(dir, "queue.db"), job.Config{MaxAttempts: 3}.WithDefaults(), clk)
	if err != nil {
		t.Fatal(err)
	}
	d := New(Options{Store: store, Devices: set, Catalog: catalog.New(filepath.Join(dir, "models"), cost.Default()), Log: log,
		Demand: predict.NewDemand(), Clock: clk, Hooks: rc.policies.Hooks, Preemption: rc.policies.Preemption, PreemptMinRun: rc.policies.PreemptMinRun, VRAMWait: rc.policies.VRAMWait,
		Scheduler: rc.policies.Scheduler, Balancer: rc.policies.Balancer, Evictor: rc.policies.Evictor, Batcher: rc.policies.Batcher})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := worker.NewPool(worker.Config{PerDevice: perDevice, Command: exe, Env: []string{"KILN_TEST_WORKER", "KILN_TEST_CRASH_ONCE", "KILN_TEST_STAGES"},
		RestartBackoffMin: 10 * time.Millisecond,
		RestartBackoffMax: 50 * time.Millisecond, PingInterval: 200 * time.Millisecond}.WithDefaults(), worker.PoolOptions{
		Devices: []wire.DeviceInfo{{Index: 0, Name: "sim-0", MemoryBytes: deviceMemory, H2DBandwidth: 25e9, Simulated: true}},
		Log:     log, OnReady: d.OnWorkerReady, OnExit: d.OnWorkerExit,
	})
	if err != nil {
		t.Fatal(err)
	}
	d.SetPool(pool)
	events, unsubscribe := d.Subscribe(10000)
	ctx, cancel := context.WithCancel(context.Background())
	pool.Start(ctx)
	r := &rig{t: t, store: store, d: d, pool: pool, set: set, events: events}
	if rc.before != nil {
		deadline := time.Now().Add(30 * time.Second)
		for pool.Ready() < perDevice {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d workers ready", pool.Ready(), perDevice)
			}
			time.Sleep(5 * time.Millisecond)
		}
		rc.before(r)
	}
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		pool.Stop()
		unsubscribe()
		store.Close()
		set.Close()
	})
	return r
}

func (r *rig) submit(class job.Class, workflow string, models ...string) string {
	r.t.Helper()
	j := &job.Job{Class: class, Workflow: json.RawMessage(workflow), Models: models}
	if err := r.store.Submit(context.Background(), j); err != nil {
		r.t.Fatal(err)
	}
	return j.ID
}

func (r *rig) waitState(id string, want job.State) *job.Job {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := r.store.Get(id)
		if err != nil {
			r.t.Fatal(err)
		}
		if j.State == want {
			return j
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("job %s: state %s (error %q), want %s", id, j.State, j.Error, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDispatchRunsJobsAndEvictsUnderTheLedger(t *testing.T) {
	// 10 GiB device, 20% headroom: 8 GiB usable, so the two 6 GiB models
	// can never be resident together and every switch evicts.
	r := newRig(t, 10*gib, 2, map[string]int64{"checkpoints/a.safetensors": 6 * gib, "checkpoints/b.safetensors": 6 * gib})
	var ids []string
	for i := 0; i < 12; i++ {
		m := "checkpoints/a.safetensors"
		if i%2 == 1 {
			m = "checkpoints/b.safetensors"
		}
		ids = append(ids, r.submit(job.Batch, `{}`, m))
	}
	for _, id := range ids {
		j := r.waitState(id, job.Done)
		if len(j.Outputs) != 1 || j.Attempts != 1 {
			t.Fatalf("job %s: outputs %v attempts %d", id, j.Outputs, j.Attempts)
		}
	}
	led := r.set.Ledger(0)
	if led.Used() > led.Usable() {
		t.Fatalf("ledger over usable: %d > %d", led.Used(), led.Usable())
	}
	if n := len(led.Snapshot()); n != 1 {
		t.Fatalf("%d reservations left, want exactly the last model", n)
	}
}

func TestDispatchRequeuesWhenTheWorkerDies(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "crashed")
	r := newRig(t, 24*gib, 1, map[string]int64{"checkpoints/a.safetensors": 2 * gib}, "KILN_TEST_CRASH_ONCE", marker)
	id := r.submit(job.Interactive, `{}`, "checkpoints/a.safetensors")
	j := r.waitState(id, job.Done)
	if j.Attempts != 2 {
		t.Fatalf("attempts %d, want 2", j.Attempts)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the worker never crashed")
	}
	if r.pool.Restarts() != 1 {
		t.Fatalf("restarts %d", r.pool.Restarts())
	}
	// The dead process's VRAM went back to the ledger before the retry
	// reserved it again: one reservation, not two.
	if n := len(r.set.Ledger(0).Snapshot()); n != 1 {
		t.Fatalf("%d reservations, want 1", n)
	}
	// The store records the outcome before the event goes out: wait for it.
	seen := map[job.EventType]int{}
	timeout := time.After(10 * time.Second)
	for seen[job.EventFinished] == 0 {
		select {
		case e := <-r.events:
			seen[e.Type]++
		case <-timeout:
			t.Fatalf("no finished event; saw %v", seen)
		}
	}
	if seen[job.EventRequeued] != 1 || seen[job.EventStarted] != 2 || seen[job.EventFinished] != 1 {
		t.Fatalf("events %v", seen)
	}
}

func TestDispatchFailuresAndCancel(t *testing.T) {
	r := newRig(t, 10*gib, 1, map[string]int64{"checkpoints/a.safetensors": 2 * gib, "checkpoints/huge.safetensors": 9 * gib})

	failed := r.submit(job.Batch, `{"fail": true}`, "checkpoints/a.safetensors")
	if j := r.waitState(failed, job.Failed); j.Error == "" || j.Attempts != 1 {
		t.Fatalf("graph failure: %+v", j)
	}

	huge := r.submit(job.Batch, `{}`, "checkpoints/huge.safetensors")
	// It can never fit, so it fails without taking a worker or an attempt.
	if j := r.waitState(huge, job.Failed); j.Attempts != 0 || !strings.Contains(j.Error, "largest device") {
		t.Fatalf("oversize job: %+v", j)
	}

	slow := r.submit(job.Interactive, `{"slow": true}`, "checkpoints/a.safetensors")
	r.waitState(slow, job.Running)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p, ok := r.d.Progress(slow); ok && p.Value >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress from the slow job")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := r.d.Cancel(slow); err != nil {
		t.Fatal(err)
	}
	r.waitState(slow, job.Cancelled)
	// The worker is free again: a new job runs.
	r.waitState(r.submit(job.Interactive, `{}`, "checkpoints/a.safetensors"), job.Done)
	if _, err := r.d.Cancel(slow); !errors.Is(err, job.ErrBadTransition) {
		t.Fatalf("second cancel: %v", err)
	}
}
