// Package edf is the built-in scheduling policy "edf": earliest deadline
// first by SLO slack. A job's slack is the time left until its deadline
// minus its estimated run time; the least slack goes first. Jobs without a
// deadline follow, interactive before batch, each in submission order.
package edf

import (
	"cmp"
	"slices"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// EDF is the policy.
type EDF struct{}

var _ policy.Scheduler = (*EDF)(nil)

// New returns the policy.
func New() *EDF { return &EDF{} }

// Schedule orders the queue by slack.
func (*EDF) Schedule(in *policy.SchedulingInput, out *policy.SchedulingOutput) policy.Status {
	if len(in.Queued) == 0 {
		return policy.StatusNoDecision
	}
	for i := range in.Queued {
		out.Dispatch = append(out.Dispatch, uint32(i))
	}
	slices.SortFunc(out.Dispatch, func(a, b uint32) int {
		x, y := &in.Queued[a], &in.Queued[b]
		if x.HasDeadline != y.HasDeadline {
			if x.HasDeadline {
				return -1
			}
			return 1
		}
		if x.HasDeadline {
			if sx, sy := x.Slack-x.EstCost, y.Slack-y.EstCost; sx != sy {
				if sx < sy {
					return -1
				}
				return 1
			}
		} else if x.Class != y.Class {
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
	return policy.StatusOK
}
