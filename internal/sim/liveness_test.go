package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Policies whose answers are well formed but stall the work, for the
// liveness test: the simulator must judge them as the live node does
// (internal/policy's stall faults) and finish every job.
func init() {
	policy.RegisterNative(abi.KindEviction, "test-evict-nothing", func() any { return evictNothing{} })
	policy.RegisterNative(abi.KindScheduling, "test-dispatch-nothing", func() any { return dispatchNothing{} })
	policy.RegisterNative(abi.KindBalancing, "test-place-nowhere", func() any { return placeNowhere{} })
}

// evictNothing answers OK with no victims, whatever the need.
type evictNothing struct{}

func (evictNothing) Evict(*abi.EvictionInput, *abi.EvictionOutput) abi.Status { return abi.StatusOK }

// dispatchNothing answers OK with an empty plan.
type dispatchNothing struct{}

func (dispatchNothing) Schedule(*abi.SchedulingInput, *abi.SchedulingOutput) abi.Status {
	return abi.StatusOK
}

// placeNowhere answers NO_DECISION to every placement.
type placeNowhere struct{}

func (placeNowhere) Balance(*abi.BalancingInput, *abi.BalancingOutput) abi.Status {
	return abi.StatusNoDecision
}

// TestStallingPoliciesFinishEveryJob runs, with each stalling policy
// active, a workload whose alternating models do not fit one device
// together (so every other job needs an eviction), and checks that every
// job completes: the simulator replays the live node's liveness rules.
func TestStallingPoliciesFinishEveryJob(t *testing.T) {
	a, b := "checkpoints/a.safetensors", "checkpoints/b.safetensors"
	models := []Model{{ID: a, Bytes: 6e9, Family: "sdxl"}, {ID: b, Bytes: 6e9, Family: "sdxl"}}
	var reqs []Request
	for i := range 12 {
		m := a
		if i%2 == 1 {
			m = b
		}
		class := job.Batch
		if i%3 == 0 {
			class = job.Interactive
		}
		reqs = append(reqs, Request{Time: time.Duration(i) * 5 * time.Second, Models: []string{m}, Class: class})
	}
	for _, tc := range []struct {
		name string
		set  func(*policy.Config)
	}{
		{"eviction", func(c *policy.Config) { c.Eviction = "test-evict-nothing" }},
		{"scheduling", func(c *policy.Config) { c.Scheduling = "test-dispatch-nothing" }},
		{"balancing", func(c *policy.Config) { c.Balancing = "test-place-nowhere" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// 13 GB at 20% headroom: 10.4 GB usable, one 6 GB model and
			// its 3.7 GB of activations at a time.
			cfg := node(1, 1, 13e9, "lru")
			cfg.Headroom = 0.2
			tc.set(&cfg.Policies)
			rep := run(t, cfg, models, reqs)
			if rep.Completed != len(reqs) || rep.Failed != 0 {
				t.Fatalf("completed %d, failed %d of %d jobs under a stalling %s policy", rep.Completed, rep.Failed, len(reqs), tc.name)
			}
			if got := fmt.Sprint(rep.Tiers["vram"].Misses); rep.Tiers["vram"].Misses < int64(len(reqs)/2) {
				t.Errorf("vram misses %s: the workload did not make the device evict", got)
			}
		})
	}
}
