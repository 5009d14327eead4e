// Package sjf is an example third-party kiln policy in Go: shortest job
// first. Interactive jobs go before batch jobs; within a class the job with
// the least estimated run time goes first, and a job that has waited longer
// than max_wait_ms goes ahead of every shorter one, so that long jobs do not
// starve. It uses only sdk/policy, as any third-party policy would.
package sjf

import (
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// SJF is the policy.
type SJF struct{}

var (
	_ policy.Scheduler     = SJF{}
	_ policy.ParamDeclarer = SJF{}
)

// Params declares "max_wait_ms".
func (SJF) Params() []policy.Param {
	return []policy.Param{{Name: "max_wait_ms", Type: policy.ParamInt, Default: 60000, Min: 0, Max: 3_600_000}}
}

// Schedule orders the queue.
func (SJF) Schedule(in *policy.SchedulingInput, out *policy.SchedulingOutput) policy.Status {
	if len(in.Queued) == 0 {
		return policy.StatusNoDecision
	}
	maxWait := time.Duration(in.Param(0, 60000)) * time.Millisecond
	for i := range in.Queued {
		out.Dispatch = append(out.Dispatch, uint32(i))
	}
	slices.SortStableFunc(out.Dispatch, func(a, b uint32) int {
		x, y := &in.Queued[a], &in.Queued[b]
		if x.Class != y.Class {
			return int(x.Class) - int(y.Class)
		}
		if sx, sy := x.Age > maxWait, y.Age > maxWait; sx != sy {
			if sx {
				return -1
			}
			return 1
		}
		switch {
		case x.EstCost < y.EstCost:
			return -1
		case x.EstCost > y.EstCost:
			return 1
		case x.Seq < y.Seq:
			return -1
		case x.Seq > y.Seq:
			return 1
		}
		return 0
	})
	return policy.StatusOK
}
