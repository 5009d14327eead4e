package sim

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/workflow"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Policies whose answers are well formed but stall the work, for the
// liveness test: the simulator must judge them as the live node does
// (internal/policy's stall faults) and finish every job. Each of issue
// 21's cases: OK with nothing, NO_DECISION, and victims that free too
// little.
func init() {
	policy.RegisterNative(abi.KindEviction, "test-evict-nothing", func() any { return evictNothing{} })
	policy.RegisterNative(abi.KindEviction, "test-evict-no-decision", func() any { return noDecision{} })
	policy.RegisterNative(abi.KindEviction, "test-evict-short", func() any { return evictShort{} })
	policy.RegisterNative(abi.KindScheduling, "test-dispatch-nothing", func() any { return dispatchNothing{} })
	policy.RegisterNative(abi.KindScheduling, "test-dispatch-no-decision", func() any { return noDecision{} })
	policy.RegisterNative(abi.KindBalancing, "test-place-nowhere", func() any { return noDecision{} })
	policy.RegisterNative(abi.KindRouting, "test-route-nowhere", func() any { return noDecision{} })
	policy.RegisterNative(abi.KindScheduling, "test-preempt-then-return", func() any { return preemptThenReturn{} })
}

// preemptThenReturn stops a running batch job for a waiting interactive
// one whenever every worker is busy (its plan led by the interactive job,
// as a preemption must be), and dispatches batch jobs first whenever a
// worker is idle: each answer is valid, and together they restart the
// batch job for ever while the interactive job never runs.
type preemptThenReturn struct{}

func (preemptThenReturn) Schedule(in *abi.SchedulingInput, out *abi.SchedulingOutput) abi.Status {
	idle := false
	for _, w := range in.Workers {
		idle = idle || w.Idle
	}
	first := abi.ClassBatch
	if !idle {
		first = abi.ClassInteractive
	}
	for _, lead := range []bool{true, false} {
		for i, j := range in.Queued {
			if (j.Class == first) == lead {
				out.Dispatch = append(out.Dispatch, uint32(i))
			}
		}
	}
	for i, r := range in.Running {
		if !idle && r.Class == abi.ClassBatch {
			out.Preempt = append(out.Preempt, uint32(i))
		}
	}
	return abi.StatusOK
}

// evictNothing answers OK with no victims, whatever the need.
type evictNothing struct{}

func (evictNothing) Evict(*abi.EvictionInput, *abi.EvictionOutput) abi.Status { return abi.StatusOK }

// evictShort names one victim, the first unpinned entry, whatever the
// need: valid, and too little whenever the need is larger than it.
type evictShort struct{}

func (evictShort) Evict(in *abi.EvictionInput, out *abi.EvictionOutput) abi.Status {
	for i, e := range in.Entries {
		if !e.Pinned && in.Need > in.Free {
			out.Victims = append(out.Victims, uint32(i))
			break
		}
	}
	return abi.StatusOK
}

// dispatchNothing answers OK with an empty plan.
type dispatchNothing struct{}

func (dispatchNothing) Schedule(*abi.SchedulingInput, *abi.SchedulingOutput) abi.Status {
	return abi.StatusOK
}

// noDecision answers NO_DECISION to every question.
type noDecision struct{}

func (noDecision) Evict(*abi.EvictionInput, *abi.EvictionOutput) abi.Status {
	return abi.StatusNoDecision
}
func (noDecision) Schedule(*abi.SchedulingInput, *abi.SchedulingOutput) abi.Status {
	return abi.StatusNoDecision
}
func (noDecision) Balance(*abi.BalancingInput, *abi.BalancingOutput) abi.Status {
	return abi.StatusNoDecision
}
func (noDecision) Route(*abi.RoutingInput, *abi.RoutingOutput) abi.Status {
	return abi.StatusNoDecision
}

// TestStallingPoliciesFinishEveryJob runs, with each stalling policy
// active, a workload whose alternating models do not fit one device
// together (so every other job needs an eviction), and checks that every
// job completes and that the host counted stall faults: the simulator
// replays the live node's liveness rules. The eviction policies also run
// with two workers on the device, where two jobs that each need the other's
// model evicted deadlocked the device's workers (issue 21), and the
// routing policy on a two-node cluster.
func TestStallingPoliciesFinishEveryJob(t *testing.T) {
	a, b := "checkpoints/a.safetensors", "checkpoints/b.safetensors"
	s1, s2, s3 := "checkpoints/s1.safetensors", "checkpoints/s2.safetensors", "checkpoints/s3.safetensors"
	models := []Model{{ID: a, Bytes: 6e9, Family: "sdxl"}, {ID: b, Bytes: 6e9, Family: "sdxl"},
		{ID: s1, Bytes: 3e9, Family: "sd15"}, {ID: s2, Bytes: 3e9, Family: "sd15"}, {ID: s3, Bytes: 3e9, Family: "sd15"}}
	// alternating: a and b in turn, each evicting the other. mixed: s1, s2,
	// s3 and a in turn, so that a needs two small models evicted and one
	// victim is too little.
	alternating, mixed := trace(a, b), trace(s1, s2, s3, a)
	for _, tc := range []struct {
		kind, name string
		perDevice  int
		nodes      int
		mixed      bool
	}{
		{kind: "eviction", name: "test-evict-nothing"},
		{kind: "eviction", name: "test-evict-no-decision"},
		{kind: "eviction", name: "test-evict-short", mixed: true},
		{kind: "eviction", name: "test-evict-nothing", perDevice: 2},
		{kind: "eviction", name: "test-evict-no-decision", perDevice: 2},
		{kind: "scheduling", name: "test-dispatch-nothing"},
		{kind: "scheduling", name: "test-dispatch-no-decision"},
		{kind: "balancing", name: "test-place-nowhere"},
		{kind: "routing", name: "test-route-nowhere", nodes: 2},
	} {
		tc.perDevice, tc.nodes = max(tc.perDevice, 1), max(tc.nodes, 1)
		t.Run(fmt.Sprintf("%s/%d workers/%d nodes", tc.name, tc.perDevice, tc.nodes), func(t *testing.T) {
			// 13 GB at 20% headroom: 10.4 GB usable, one 6 GB model and
			// its 3.7 GB of activations at a time.
			cfg := node(1, tc.perDevice, 13e9, "lru")
			cfg.Headroom = 0.2
			switch tc.kind {
			case "eviction":
				cfg.Policies.Eviction = tc.name
			case "scheduling":
				cfg.Policies.Scheduling = tc.name
			case "balancing":
				cfg.Policies.Balancing = tc.name
			case "routing":
				cfg.Policies.Routing = tc.name
			}
			reqs := alternating
			if tc.mixed {
				reqs = mixed
			}
			var rep *Report
			if tc.nodes > 1 {
				rep = runCluster(t, ClusterConfig{Node: cfg, Nodes: tc.nodes, NetworkDelay: time.Millisecond}, models, reqs, 3)
				if rep.Cluster.Unrouted != 0 {
					t.Errorf("%d jobs unrouted", rep.Cluster.Unrouted)
				}
			} else {
				rep = run(t, cfg, models, reqs)
			}
			if rep.Completed != len(reqs) || rep.Failed != 0 {
				t.Fatalf("completed %d, failed %d of %d jobs under a stalling %s policy", rep.Completed, rep.Failed, len(reqs), tc.kind)
			}
			if tc.kind == "eviction" && rep.Tiers["vram"].Misses < int64(len(reqs)/2) {
				t.Errorf("vram misses %d: the workload did not make the device evict", rep.Tiers["vram"].Misses)
			}
			var stalls int64
			for ref, by := range rep.PolicyFaults {
				if strings.HasPrefix(ref, tc.kind+"."+tc.name+"@") {
					stalls += by[policy.FaultStall]
				}
			}
			if stalls == 0 {
				t.Errorf("no stall fault counted for %s.%s (faults %v)", tc.kind, tc.name, rep.PolicyFaults)
			}
		})
	}
}

// trace is 12 requests 5 s apart over models in turn, a third of them
// interactive.
func trace(models ...string) []Request {
	var reqs []Request
	for i := range 12 {
		class := job.Batch
		if i%3 == 0 {
			class = job.Interactive
		}
		reqs = append(reqs, Request{Time: time.Duration(i) * 5 * time.Second, Models: []string{models[i%len(models)]}, Class: class})
	}
	return reqs
}

// TestPreemptionCannotLivelock runs preemptThenReturn on one worker: a
// long batch job, and an interactive job that arrives a second later.
// Before the dispatcher bounded preemptions per job
// (dispatch.PreemptMaxStarts) the batch job was stopped every min-run and
// dispatched again, and the run never ended; now both jobs finish, after
// PreemptMaxStarts preemptions.
func TestPreemptionCannotLivelock(t *testing.T) {
	models := []Model{{ID: "a", Bytes: 2e9, Family: "sd15"}}
	long := []workflow.SamplerParams{{Steps: 2000, Width: 512, Height: 512, BatchSize: 1}}
	reqs := []Request{{Models: []string{"a"}, Class: job.Batch, Samplers: long},
		{Time: time.Second, Models: []string{"a"}, Class: job.Interactive}}
	cfg := node(1, 1, 24e9, "lru")
	cfg.Preemption, cfg.PreemptMinRun = true, 5*time.Second
	cfg.Policies.Scheduling = "test-preempt-then-return"
	// A livelocked run never ends: fail it instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := Run(ctx, cfg, models, &Trace{Requests: reqs}, Options{Wall: fakeWall(), Seed: 7})
	if err != nil {
		t.Fatalf("run: %v (a scheduler that preempts a job and dispatches it again must not keep the run from ending)", err)
	}
	if rep.Completed != len(reqs) || rep.Failed != 0 {
		t.Errorf("completed %d, failed %d of %d jobs", rep.Completed, rep.Failed, len(reqs))
	}
	if rep.Preemptions != dispatch.PreemptMaxStarts {
		t.Errorf("%d preemptions, want %d (one per start up to dispatch.PreemptMaxStarts)", rep.Preemptions, dispatch.PreemptMaxStarts)
	}
}
