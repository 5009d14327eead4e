// Package fifo is the built-in scheduling policy "fifo": jobs run in
// submission order, whatever their class.
package fifo

import (
	"cmp"
	"slices"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// FIFO is the policy.
type FIFO struct{}

var _ policy.Scheduler = (*FIFO)(nil)

// New returns the policy.
func New() *FIFO { return &FIFO{} }

// Schedule lists every queued job by sequence number.
func (*FIFO) Schedule(in *policy.SchedulingInput, out *policy.SchedulingOutput) policy.Status {
	if len(in.Queued) == 0 {
		return policy.StatusNoDecision
	}
	for i := range in.Queued {
		out.Dispatch = append(out.Dispatch, uint32(i))
	}
	slices.SortFunc(out.Dispatch, func(a, b uint32) int {
		if c := cmpU64(in.Queued[a].Seq, in.Queued[b].Seq); c != 0 {
			return c
		}
		return cmp.Compare(a, b) // equal keys keep their input order
	})
	return policy.StatusOK
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
