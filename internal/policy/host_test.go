package policy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/policies/policytest"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

func newTestHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = time.Second // generous: CI machines are slow and -race slower
	}
	cfg.CacheDir = testCacheDir
	h, err := newHost(cfg, zerolog.Nop(), clock.Real(), fstest.MapFS{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestBuiltinsThroughWASM(t *testing.T) {
	h := newTestHost(t, Config{})
	for name, cases := range policytest.Cases {
		t.Run(name, func(t *testing.T) {
			kindName, policyName, _ := strings.Cut(name, ".")
			k, err := abi.ParseKind(kindName)
			if err != nil {
				t.Fatal(err)
			}
			vi, err := h.Load(context.Background(), k, policyName, wasmOf(t, name), false, "test")
			if err != nil {
				t.Fatal(err)
			}
			v := find(h.slots[k], policyName, vi.Version)
			for _, c := range cases {
				t.Run(c.Name, func(t *testing.T) {
					out, err := v.mod.call(context.Background(), &callInfo{}, c.Input(nil), nil)
					if err != nil {
						t.Fatal(err)
					}
					if err := c.Verify(out); err != nil {
						t.Error(err)
					}
				})
			}
		})
	}
}

// sample views for the adapters.
func sampleViews() ([]decision.JobView, []decision.WorkerView, []decision.EntryView) {
	now := time.Now()
	jobs := []decision.JobView{
		{ID: "b1", Class: job.Batch, Seq: 1, Models: []string{"m1"}, EstimatedVRAM: 1 << 30},
		{ID: "i2", Class: job.Interactive, Seq: 2, Models: []string{"m2"}, EstimatedVRAM: 1 << 30},
	}
	workers := []decision.WorkerView{
		{ID: "w0", Idle: false, DeviceBusy: 1},
		{ID: "w1", Idle: true, Device: 1, Resident: []decision.ResidentModel{{Model: "m1", Bytes: 1 << 30}}},
	}
	entries := []decision.EntryView{
		{Model: "m1", Worker: "w1", Bytes: 1 << 30, LastUse: now.Add(-time.Minute)},
		{Model: "m2", Worker: "w1", Bytes: 1 << 30, LastUse: now.Add(-time.Hour), Pinned: true},
		{Model: "m3", Worker: "w1", Bytes: 1 << 30, LastUse: now.Add(-time.Second)},
	}
	return jobs, workers, entries
}

// TestHostileModules loads a module that misbehaves in each way the issue
// names and checks that each decision gets the native fallback's answer,
// that a fault is counted, and that the host keeps serving.
func TestHostileModules(t *testing.T) {
	wasm := wasmOf(t, "hostile")
	h := newTestHost(t, Config{MaxFaults: 1000, CallTimeout: 200 * time.Millisecond, MemoryLimitMiB: 32})
	jobs, workers, entries := sampleViews()
	for _, k := range abi.Kinds {
		if _, err := h.Load(context.Background(), k, "hostile", wasm, true, "test"); err != nil {
			t.Fatalf("load hostile %s: %v", k, err)
		}
	}
	// The fallback is the native build of the same built-ins (Native).
	wantSched, _ := Native().Scheduler().Next(jobs, workers)
	wantPlace, _ := Native().Balancer().Place(jobs[0], workers)
	wantVictims := Native().NewEvictor().Victims(1<<30, entries)
	// least-loaded, the routing fallback, takes the node with fewer jobs.
	nodes := []decision.NodeView{{ID: "n0", Healthy: true, Workers: 1, Queued: 2}, {ID: "n1", Workers: 1}, {ID: "n2", Healthy: true, Workers: 1, Queued: 1}}
	decisions := func() (string, string, []int, []string) {
		s, _ := h.Scheduler().Next(jobs, workers)
		p, _ := h.Balancer().Place(jobs[0], workers)
		v := h.Evictor().Victims(1<<30, entries)
		b, _ := h.Batcher().Batch(jobs[0], jobs, workers)
		return s, p, v, b
	}
	for _, tc := range []struct {
		name string
		mode float64
	}{
		{"infinite loop", 1}, {"memory bomb", 2}, {"panic", 3}, {"huge output", 4}, {"invalid answer", 5}, {"error status", 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := map[abi.Kind]int64{}
			for _, k := range abi.Kinds {
				if err := h.SetParam(k, "mode", tc.mode); err != nil {
					t.Fatal(err)
				}
				before[k] = h.slots[k].active.Load().faults.Load()
			}
			s, p, v, b := decisions()
			// A routing answer is one word: with nothing huge to say, the
			// hostile module answers well (its first healthy node).
			wantNode := map[bool]string{true: "n0", false: "n2"}[tc.mode == 4]
			if n, _ := h.Router().Route(decision.RouteRequest{Job: jobs[0], Nodes: nodes}); n != wantNode {
				t.Errorf("routed to %q, want %q", n, wantNode)
			}
			if s != wantSched || p != wantPlace || fmt.Sprint(v) != fmt.Sprint(wantVictims) || fmt.Sprint(b) != "[b1]" {
				t.Errorf("decisions %q %q %v %v; want the fallbacks' %q %q %v [b1]", s, p, v, b, wantSched, wantPlace, wantVictims)
			}
			for _, k := range abi.Kinds {
				if tc.mode == 4 && (k == abi.KindBalancing || k == abi.KindBatching || k == abi.KindRouting) {
					continue // these hooks have no huge answer to give
				}
				if got := h.slots[k].active.Load().faults.Load() - before[k]; got != 1 {
					t.Errorf("%s: %d faults counted, want 1", k, got)
				}
			}
		})
	}
	// Healthy again: the module answers by itself, from fresh instances.
	for _, k := range abi.Kinds {
		if err := h.SetParam(k, "mode", 0); err != nil {
			t.Fatal(err)
		}
	}
	before := h.slots[abi.KindScheduling].active.Load().faults.Load()
	if s, _ := h.Scheduler().Next(jobs, workers); s != "i2" { // the hostile module picks the last job
		t.Errorf("healthy hostile module chose %q, want i2", s)
	}
	if got := h.slots[abi.KindScheduling].active.Load().faults.Load(); got != before {
		t.Errorf("faults grew from %d to %d on a healthy call", before, got)
	}
}

func TestAutoRollback(t *testing.T) {
	wasm := wasmOf(t, "hostile")
	h := newTestHost(t, Config{MaxFaults: 3})
	jobs, workers, _ := sampleViews()
	if _, err := h.Load(context.Background(), abi.KindScheduling, "bad", wasm, true, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetParam(abi.KindScheduling, "mode", 6); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, _ := h.Scheduler().Next(jobs, workers); got != "i2" {
			t.Fatalf("fallback answer %q, want i2", got)
		}
	}
	ki := h.List()[1]
	if ki.Active != "priority@1" {
		t.Fatalf("active %s after 3 faults, want priority@1 (rolled back)", ki.Active)
	}
	last := ki.Changes[len(ki.Changes)-1]
	if last.Action != "auto-rollback" || !strings.Contains(last.Reason, "3 faults") {
		t.Errorf("last change %+v, want an auto-rollback naming 3 faults", last)
	}
}

// TestHotSwapUnderLoad swaps the scheduling policy back and forth while
// goroutines decide; no decision may fail or fall back.
func TestHotSwapUnderLoad(t *testing.T) {
	fifo, prio := wasmOf(t, "scheduling.fifo"), wasmOf(t, "scheduling.priority")
	h := newTestHost(t, Config{})
	ctx := context.Background()
	if _, err := h.Load(ctx, abi.KindScheduling, "fifo", fifo, true, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Load(ctx, abi.KindScheduling, "prio", prio, false, "test"); err != nil {
		t.Fatal(err)
	}
	jobs, workers, _ := sampleViews()
	var stop atomic.Bool
	var decisions, bad atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				p := h.Scheduler().Plan(jobs, nil, workers)
				decisions.Add(1)
				if p.Fallback || len(p.Dispatch) != 2 {
					bad.Add(1)
				}
			}
		}()
	}
	swaps := 0
	for i := 0; swaps < 20 || decisions.Load() < 200; i++ {
		name := []string{"prio", "fifo"}[i%2]
		if _, err := h.Activate(ctx, abi.KindScheduling, name, 0, "swap test"); err != nil {
			t.Fatal(err)
		}
		swaps++
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d of %d decisions failed or fell back during %d swaps", bad.Load(), decisions.Load(), swaps)
	}
	for _, v := range h.slots[abi.KindScheduling].versions {
		if v.faults.Load() != 0 {
			t.Errorf("%s counted %d faults", v.ref(), v.faults.Load())
		}
	}
}

func TestRollbackAndActivate(t *testing.T) {
	h := newTestHost(t, Config{})
	ctx := context.Background()
	if _, err := h.Rollback(abi.KindEviction, "nothing yet"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rollback with no history: %v, want ErrNotFound", err)
	}
	if _, err := h.Activate(ctx, abi.KindEviction, "gdsf", 0, "try"); err != nil {
		t.Fatal(err)
	}
	if got := h.List()[0].Active; got != "gdsf@1" {
		t.Fatalf("active %s, want gdsf@1", got)
	}
	if _, err := h.Rollback(abi.KindEviction, "back"); err != nil {
		t.Fatal(err)
	}
	if got := h.List()[0].Active; got != "lru@1" {
		t.Fatalf("active %s after rollback, want lru@1", got)
	}
	if _, err := h.Activate(ctx, abi.KindEviction, "nope", 0, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("activate unknown: %v, want ErrNotFound", err)
	}
}

func TestNativeBuiltinsDecide(t *testing.T) {
	h := newTestHost(t, Config{Scheduling: "edf", Balancing: "affinity", Batching: "same-model", Eviction: "s3fifo"})
	jobs, workers, entries := sampleViews()
	if id, ok := h.Scheduler().Next(jobs, workers); !ok || id != "i2" {
		t.Errorf("edf chose %q, %v; want i2", id, ok)
	}
	if id, ok := h.Balancer().Place(jobs[0], workers); !ok || id != "w1" {
		t.Errorf("affinity chose %q, %v; want w1", id, ok)
	}
	if v := h.Evictor().Victims(1<<30, entries); len(v) != 1 || entries[v[0]].Pinned {
		t.Errorf("s3fifo chose %v", v)
	}
	if ids, _ := h.Batcher().Batch(jobs[1], jobs, workers); len(ids) != 1 || ids[0] != "i2" {
		t.Errorf("same-model batch %v, want [i2]", ids)
	}
	for _, ki := range h.List() {
		for _, v := range ki.Versions {
			if v.Faults != 0 {
				t.Errorf("%s.%s: %d faults", ki.Kind, v.Name, v.Faults)
			}
		}
	}
}

func TestEmbeddedBuiltinUpgrade(t *testing.T) {
	fsys := fstest.MapFS{BuiltinFile(abi.KindBalancing, "round-robin"): {Data: wasmOf(t, "balancing.round-robin")}}
	h, err := newHost(Config{Balancing: "round-robin", CallTimeout: time.Second, CacheDir: testCacheDir}, zerolog.Nop(), clock.Real(), fsys)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	ki := h.List()[3]
	if ki.Versions[0].Source != SourceBuiltin {
		t.Fatalf("round-robin source %s, want %s", ki.Versions[0].Source, SourceBuiltin)
	}
	_, workers, _ := sampleViews()
	workers = append(workers, decision.WorkerView{ID: "w2", Idle: true})
	var got []string
	for range 4 {
		id, _ := h.Balancer().Place(decision.JobView{ID: "j"}, workers)
		got = append(got, id)
	}
	if fmt.Sprint(got) != "[w1 w2 w1 w2]" {
		t.Errorf("round-robin placed %v, want [w1 w2 w1 w2]", got)
	}
}

// TestPlanIDsPreempts asks the priority policy, through the adapter the
// dispatcher can find by type assertion, for a plan with a running batch
// job at a step boundary and an interactive job that has waited past the
// bound: the plan dispatches the interactive job and preempts the batch one.
func TestPlanIDsPreempts(t *testing.T) {
	h := newTestHost(t, Config{})
	queued := []decision.JobView{{ID: "i1", Class: job.Interactive, Age: time.Minute, Seq: 2}}
	running := []decision.JobView{{ID: "b1", Class: job.Batch, Age: 2 * time.Minute, Seq: 1, Running: true, Worker: "w0", AtStepBoundary: true}}
	workers := []decision.WorkerView{{ID: "w0", Idle: false}}
	var planner interface {
		PlanIDs(queued, running []decision.JobView, workers []decision.WorkerView) ([]string, []string)
	} = h.Scheduler()
	next, preempt := planner.PlanIDs(queued, running, workers)
	if fmt.Sprint(next) != "[i1]" || fmt.Sprint(preempt) != "[b1]" {
		t.Errorf("PlanIDs = %v, %v; want [i1], [b1]", next, preempt)
	}
	running[0].AtStepBoundary = false
	if _, preempt := planner.PlanIDs(queued, running, workers); len(preempt) != 0 {
		t.Errorf("preempted %v between step boundaries", preempt)
	}
}

// TestPrefetchIDs asks the LRU built-in, through the adapter the
// dispatcher can find by type assertion, what to prefetch into 10 GiB: the
// most-waited-for model does not fit, the next does, and a model nobody
// waits for is never fetched.
func TestPrefetchIDs(t *testing.T) {
	h := newTestHost(t, Config{})
	const gib = 1 << 30
	var prefetcher interface {
		PrefetchIDs(free uint64, entries []decision.EntryView, wanted []string, wantedBytes []uint64, waiting []int) []string
	} = h.Evictor()
	got := prefetcher.PrefetchIDs(10*gib, nil, []string{"a", "b", "c"}, []uint64{2 * gib, 20 * gib, gib}, []int{2, 5, 0})
	if fmt.Sprint(got) != "[a]" {
		t.Errorf("PrefetchIDs = %v, want [a]", got)
	}
	if err := h.SetParam(abi.KindEviction, "prefetch", 0); err != nil {
		t.Fatal(err)
	}
	if got := prefetcher.PrefetchIDs(10*gib, nil, []string{"a"}, []uint64{2 * gib}, []int{2}); len(got) != 0 {
		t.Errorf("PrefetchIDs with prefetch off = %v, want none", got)
	}
}

func TestSetParamsTypedAndAtomic(t *testing.T) {
	h := newTestHost(t, Config{NativeBuiltins: true, Scheduling: "priority"})
	k := abi.KindScheduling
	value := func() float64 { return h.List()[1].Versions[0].Params["max_wait_ms"] }
	for _, tc := range []struct {
		name    string
		set     map[string]float64
		wantErr string
		want    float64
	}{
		{name: "int", set: map[string]float64{"max_wait_ms": 1000}, want: 1000},
		{name: "int refuses a fraction", set: map[string]float64{"max_wait_ms": 1.5}, wantErr: "not an integer", want: 1000},
		{name: "NaN", set: map[string]float64{"max_wait_ms": math.NaN()}, wantErr: "not a number", want: 1000},
		{name: "bounds", set: map[string]float64{"max_wait_ms": -1}, wantErr: "outside [0, 3.6e+06]", want: 1000},
		// The valid value is not applied when another in the request is bad.
		{name: "all or none", set: map[string]float64{"max_wait_ms": 2000, "zzz": 1}, wantErr: "declares: max_wait_ms (int, 0..3.6e+06)", want: 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.SetParams(k, tc.set)
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("SetParams(%v) = %v; want error containing %q", tc.set, err, tc.wantErr)
			}
			if got := value(); got != tc.want {
				t.Errorf("max_wait_ms = %v, want %v", got, tc.want)
			}
		})
	}
	if err := h.SetParam(k, "zzz", 1); !errors.Is(err, ErrUnknownParam) {
		t.Errorf("SetParam unknown: %v, want ErrUnknownParam", err)
	}
}
