package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// The hostile module's stalling modes (testdata/hostile).
const (
	hostileStall      = 9
	hostileNoDecision = 10
	// hostileShort names one victim whatever the need: valid, and short.
	hostileShort = 11
)

// TestStallingAnswersAreFaults loads a module whose answers are well formed
// but leave work stuck — OK with nothing, or NO_DECISION — and checks, for
// each kind where a decision was needed and possible, that the native
// policy answers, that a stall fault is counted, and that the same answers
// where nothing could progress are not faults.
func TestStallingAnswersAreFaults(t *testing.T) {
	wasm := wasmOf(t, "hostile")
	h := newTestHost(t, Config{MaxFaults: 1000})
	for _, k := range abi.Kinds {
		if _, err := h.Load(context.Background(), k, "hostile", wasm, true, "test"); err != nil {
			t.Fatalf("load hostile %s: %v", k, err)
		}
	}
	jobs, workers, entries := sampleViews()
	const gib = 1 << 30
	allBusy := []decision.WorkerView{{ID: "w0", DeviceBusy: 1}, {ID: "w1", DeviceBusy: 1}}
	tooSmall := []decision.WorkerView{{ID: "w0", Idle: true, UsableVRAM: gib / 2}}
	nodes := []decision.NodeView{{ID: "n0", Healthy: true, Workers: 2, Queued: 3}, {ID: "n1", Healthy: true, Workers: 2}}
	down := []decision.NodeView{{ID: "n0", Workers: 2}, {ID: "n1", Workers: 2}}
	for _, tc := range []struct {
		name    string
		kind    abi.Kind
		decide  func() string
		want    string // the answer (the native policy's where it is a fault)
		isFault bool
		modes   []float64 // the hostile modes that answer so (default: stall and no decision)
	}{
		{
			name: "evict nothing though unpinned entries cover the need", kind: abi.KindEviction,
			decide: func() string { return fmt.Sprint(h.Evictor().Victims(2*gib, entries)) },
			want:   fmt.Sprint(Native().NewEvictor().Victims(2*gib, entries)), isFault: true,
		},
		{
			name: "evict too little though unpinned entries cover the need", kind: abi.KindEviction,
			decide: func() string { return fmt.Sprint(h.Evictor().Victims(2*gib, entries)) },
			want:   fmt.Sprint(Native().NewEvictor().Victims(2*gib, entries)), isFault: true,
			modes: []float64{hostileShort},
		},
		{
			name: "one victim that covers the need", kind: abi.KindEviction,
			decide: func() string { return fmt.Sprint(h.Evictor().Victims(gib, entries)) },
			want:   "[0]", modes: []float64{hostileShort},
		},
		{
			name: "evict nothing when only pins stand in the way", kind: abi.KindEviction,
			decide: func() string { return fmt.Sprint(h.Evictor().Victims(3*gib, entries)) },
			want:   "[]",
		},
		{
			name: "prefetch-only call that evicts nothing", kind: abi.KindEviction,
			decide: func() string {
				return fmt.Sprint(h.Evictor().Decide(EvictionRequest{Need: gib, Free: 2 * gib, Entries: entries}).Victims)
			},
			want: "[]",
		},
		{
			name: "dispatch nothing while a job fits an idle worker", kind: abi.KindScheduling,
			decide: func() string { id, _ := h.Scheduler().Next(jobs, workers); return id },
			want:   nativeNext(jobs, workers), isFault: true,
		},
		{
			name: "dispatch nothing while every worker is busy", kind: abi.KindScheduling,
			decide: func() string { id, _ := h.Scheduler().Next(jobs, allBusy); return id },
			want:   "",
		},
		{
			name: "dispatch nothing while no idle worker can hold a job", kind: abi.KindScheduling,
			decide: func() string { id, _ := h.Scheduler().Next(jobs, tooSmall); return id },
			want:   "",
		},
		{
			name: "place nowhere while an idle worker can hold the job", kind: abi.KindBalancing,
			decide: func() string { id, _ := h.Balancer().Place(jobs[0], workers); return id },
			want:   "w1", isFault: true,
		},
		{
			name: "place nowhere while no idle worker can hold the job", kind: abi.KindBalancing,
			decide: func() string { id, _ := h.Balancer().Place(jobs[0], tooSmall); return id },
			want:   "",
		},
		{
			// Batching cannot stall: without company the lead runs alone.
			name: "batch nothing", kind: abi.KindBatching,
			decide: func() string { ids, _ := h.Batcher().Batch(jobs[0], jobs, workers); return fmt.Sprint(ids) },
			want:   "[b1]",
		},
		{
			name: "route nowhere while a healthy node can hold the job", kind: abi.KindRouting,
			decide: func() string { id, _ := h.Router().Route(decision.RouteRequest{Job: jobs[0], Nodes: nodes}); return id },
			want:   "n1", isFault: true, // least-loaded, the native fallback
		},
		{
			name: "route nowhere while no node is healthy", kind: abi.KindRouting,
			decide: func() string { id, _ := h.Router().Route(decision.RouteRequest{Job: jobs[0], Nodes: down}); return id },
			want:   "",
		},
	} {
		if tc.modes == nil {
			tc.modes = []float64{hostileStall, hostileNoDecision}
		}
		for _, mode := range tc.modes {
			t.Run(fmt.Sprintf("%s/mode %v", tc.name, mode), func(t *testing.T) {
				if err := h.SetParam(tc.kind, "mode", mode); err != nil {
					t.Fatal(err)
				}
				v := h.slots[tc.kind].active.Load()
				before, beforeStall := v.faults.Load(), v.faultsBy[faultIndex(&FaultError{Kind: FaultStall})].Load()
				if got := strings.Trim(tc.decide(), "[]"); got != strings.Trim(tc.want, "[]") {
					t.Errorf("answer %q, want %q", got, tc.want)
				}
				faults, stalls := v.faults.Load()-before, v.faultsBy[faultIndex(&FaultError{Kind: FaultStall})].Load()-beforeStall
				if want := map[bool]int64{true: 1, false: 0}[tc.isFault]; faults != want || stalls != want {
					t.Errorf("%d faults (%d stalls) counted, want %d", faults, stalls, want)
				}
			})
		}
	}
}

func nativeNext(jobs []decision.JobView, workers []decision.WorkerView) string {
	id, _ := Native().Scheduler().Next(jobs, workers)
	return id
}

// TestStallingPolicyIsRolledBack checks that stall faults roll a policy
// back like any other fault, for every kind that can stall: after
// MaxFaults within the window the kind's previous version is active again,
// and the change says why.
func TestStallingPolicyIsRolledBack(t *testing.T) {
	wasm := wasmOf(t, "hostile")
	h := newTestHost(t, Config{MaxFaults: 3, FaultWindow: time.Minute})
	jobs, workers, entries := sampleViews()
	nodes := []decision.NodeView{{ID: "n0", Healthy: true, Workers: 2}}
	for _, k := range stallingKinds {
		if _, err := h.Load(context.Background(), k, "stall", wasm, true, "test"); err != nil {
			t.Fatal(err)
		}
		if err := h.SetParam(k, "mode", hostileStall); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		h.Evictor().Victims(1<<30, entries)
		h.Scheduler().Next(jobs, workers)
		h.Balancer().Place(jobs[0], workers)
		h.Router().Route(decision.RouteRequest{Job: jobs[0], Nodes: nodes})
	}
	rolledBack := 0
	for _, ki := range h.List() {
		k, _ := abi.ParseKind(ki.Kind)
		if !slices.Contains(stallingKinds, k) {
			continue
		}
		rolledBack++
		if strings.HasPrefix(ki.Active, "stall@") {
			t.Errorf("%s: still %s after 3 stall faults", ki.Kind, ki.Active)
			continue
		}
		last := ki.Changes[len(ki.Changes)-1]
		if last.Action != "auto-rollback" || !strings.Contains(last.Reason, FaultStall) {
			t.Errorf("%s: last change %+v, want an auto-rollback naming the stall", ki.Kind, last)
		}
	}
	if rolledBack != len(stallingKinds) {
		t.Errorf("checked %d kinds, want %d", rolledBack, len(stallingKinds))
	}
}

// stallingKinds are the kinds whose answers can stall work: all but
// batching, whose lead alone is always progress.
var stallingKinds = []abi.Kind{abi.KindEviction, abi.KindScheduling, abi.KindBalancing, abi.KindRouting}

// TestBuiltinsNeverStall runs every built-in (its native build: the same
// source as its WASM build) over many seeded random traces, through the
// host's full decision path, stall check included. A built-in that could
// stall would be answered by the fallback and rolled back in production,
// and would fail its load on an unlucky self-test seed.
func TestBuiltinsNeverStall(t *testing.T) {
	h := newTestHost(t, Config{NativeBuiltins: true, MaxFaults: 1 << 30})
	seeds := uint64(300)
	if testing.Short() {
		seeds = 40
	}
	for _, k := range abi.Kinds {
		for name := range builtins[k] {
			if strings.HasPrefix(name, "test-") {
				continue
			}
			arm, err := h.Arm(context.Background(), k, name, 0)
			if err != nil {
				t.Fatal(err)
			}
			for seed := uint64(1); seed <= seeds; seed++ {
				if _, err := h.runTrace(context.Background(), arm.v, seed, 40, 0); err != nil {
					t.Fatalf("%s.%s: %v", k, name, err)
				}
			}
		}
	}
}

// neverDecides answers NO_DECISION to every kind.
type neverDecides struct{}

func (neverDecides) Evict(*abi.EvictionInput, *abi.EvictionOutput) abi.Status {
	return abi.StatusNoDecision
}
func (neverDecides) Schedule(*abi.SchedulingInput, *abi.SchedulingOutput) abi.Status {
	return abi.StatusNoDecision
}
func (neverDecides) Balance(*abi.BalancingInput, *abi.BalancingOutput) abi.Status {
	return abi.StatusNoDecision
}
func (neverDecides) Route(*abi.RoutingInput, *abi.RoutingOutput) abi.Status {
	return abi.StatusNoDecision
}

func init() {
	for _, k := range stallingKinds {
		RegisterNative(k, "test-never-decides", func() any { return neverDecides{} })
	}
}

// TestRandomTracesCatchStalls checks that the traces TestBuiltinsNeverStall
// relies on do ask for decisions that are needed and possible: a policy
// that never decides must stall on them, for every kind that can stall.
func TestRandomTracesCatchStalls(t *testing.T) {
	h := newTestHost(t, Config{NativeBuiltins: true, MaxFaults: 1 << 30})
	for _, k := range stallingKinds {
		arm, err := h.Arm(context.Background(), k, "test-never-decides", 0)
		if err != nil {
			t.Fatal(err)
		}
		caught := 0
		for seed := uint64(1); seed <= 20; seed++ {
			if _, err := h.runTrace(context.Background(), arm.v, seed, 40, 0); err != nil {
				if !strings.Contains(err.Error(), FaultStall) {
					t.Fatalf("%s: %v, want a stall", k, err)
				}
				caught++
			}
		}
		if caught < 15 {
			t.Errorf("%s: only %d of 20 traces caught a policy that never decides", k, caught)
		}
	}
}

// TestSelfTestRefusesAPolicyThatNeverDecides: the load's fixed self-test
// inputs ask, for every kind that can stall, a decision that is needed and
// possible, so a policy that always answers NO_DECISION fails the
// self-test with a stall (ABI.md §5.5: it is refused at load), before the
// random inputs are drawn.
func TestSelfTestRefusesAPolicyThatNeverDecides(t *testing.T) {
	h := newTestHost(t, Config{NativeBuiltins: true, MaxFaults: 1 << 30})
	for _, k := range stallingKinds {
		arm, err := h.Arm(context.Background(), k, "test-never-decides", 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.selfTest(arm.v); err == nil || !strings.Contains(err.Error(), FaultStall) {
			t.Errorf("%s: self-test of a policy that never decides: %v; want a stall", k, err)
		}
	}
}
