// Package priority is the built-in scheduling policy "priority": interactive
// jobs before batch jobs, each class in submission order. When an
// interactive job has waited longer than max_wait_ms and no worker is idle,
// it preempts one running batch job that is at a step boundary (the newest
// one, which loses the least progress).
package priority

import (
	"cmp"
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// Priority is the policy.
type Priority struct{}

var (
	_ policy.Scheduler     = (*Priority)(nil)
	_ policy.ParamDeclarer = (*Priority)(nil)
)

// New returns the policy.
func New() *Priority { return &Priority{} }

// Params declares "max_wait_ms", how long an interactive job waits before it
// preempts a batch job.
func (*Priority) Params() []policy.Param {
	return []policy.Param{{Name: "max_wait_ms", Type: policy.ParamInt, Default: 30000, Min: 0, Max: 3_600_000}}
}

// Schedule orders the queue and names at most one preemption.
func (*Priority) Schedule(in *policy.SchedulingInput, out *policy.SchedulingOutput) policy.Status {
	if len(in.Queued) == 0 {
		return policy.StatusNoDecision
	}
	for i := range in.Queued {
		out.Dispatch = append(out.Dispatch, uint32(i))
	}
	slices.SortFunc(out.Dispatch, func(a, b uint32) int {
		x, y := &in.Queued[a], &in.Queued[b]
		if x.Class != y.Class {
			return int(x.Class) - int(y.Class)
		}
		switch {
		case x.Seq < y.Seq:
			return -1
		case x.Seq > y.Seq:
			return 1
		}
		return cmp.Compare(a, b) // equal keys keep their input order
	})
	first := &in.Queued[out.Dispatch[0]]
	maxWait := time.Duration(in.Param(0, 30000)) * time.Millisecond
	if first.Class != policy.ClassInteractive || first.Age <= maxWait {
		return policy.StatusOK
	}
	for _, w := range in.Workers {
		if w.Idle {
			return policy.StatusOK
		}
	}
	victim := -1
	for i, r := range in.Running {
		if r.Class == policy.ClassBatch && r.AtStepBoundary && (victim < 0 || r.Seq > in.Running[victim].Seq) {
			victim = i
		}
	}
	if victim >= 0 {
		out.Preempt = append(out.Preempt, uint32(victim))
	}
	return policy.StatusOK
}
