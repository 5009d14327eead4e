// Command slowsched is a scheduling policy that is correct but slow: it
// dispatches the queue in submission order after spinning for "spin_m"
// million iterations per decision (tens of milliseconds), well within a
// generous call timeout. It faults never; it only makes every job wait.
// TestWatchLive activates it by hand and expects the watch to roll it
// back.
package main

import (
	"slices"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

type slow struct{}

func (slow) Params() []policy.Param {
	return []policy.Param{{Name: "spin_m", Type: policy.ParamInt, Default: 40, Min: 0, Max: 1000}}
}

// sink keeps the spin from being optimised away.
var sink uint64

func (slow) Schedule(in *policy.SchedulingInput, out *policy.SchedulingOutput) policy.Status {
	x := sink
	for i := uint64(0); i < uint64(in.Param(0, 40))*1_000_000; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	sink = x
	if len(in.Queued) == 0 {
		return policy.StatusNoDecision
	}
	idx := make([]uint32, len(in.Queued))
	for i := range idx {
		idx[i] = uint32(i)
	}
	slices.SortStableFunc(idx, func(a, b uint32) int {
		sa, sb := in.Queued[a].Seq, in.Queued[b].Seq
		switch {
		case sa < sb:
			return -1
		case sa > sb:
			return 1
		}
		return 0
	})
	out.Dispatch = idx
	return policy.StatusOK
}

func init() { policy.Serve(slow{}) }

func main() {}
