// Package leastloaded is the built-in balancing policy "least-loaded": the
// idle worker whose device has the fewest busy workers; ties go to the one
// that already holds more of the job's model bytes, then to more free VRAM.
// Degraded devices come last. Its native build is the kernel's
// fallback balancer (internal/policy Native).
package leastloaded

import (
	"slices"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// LeastLoaded is the policy.
type LeastLoaded struct{}

var _ policy.Balancer = (*LeastLoaded)(nil)

// New returns the policy.
func New() *LeastLoaded { return &LeastLoaded{} }

// Balance picks the least loaded suitable worker.
func (*LeastLoaded) Balance(in *policy.BalancingInput, out *policy.BalancingOutput) policy.Status {
	best := -1
	var bestRes uint64
	for i := range in.Workers {
		w := &in.Workers[i]
		if !w.Idle || !policy.Fits(&in.Job, w) {
			continue
		}
		var res uint64
		for _, m := range in.Job.Models {
			if slices.Contains(w.Resident, m) {
				res += in.Models[m].Bytes
			}
		}
		if best < 0 || better(w, res, &in.Workers[best], bestRes) {
			best, bestRes = i, res
		}
	}
	if best < 0 {
		return policy.StatusNoDecision
	}
	out.Worker = uint32(best)
	return policy.StatusOK
}

func better(x *policy.Worker, rx uint64, y *policy.Worker, ry uint64) bool {
	if x.Degraded != y.Degraded {
		return !x.Degraded
	}
	if x.DeviceBusy != y.DeviceBusy {
		return x.DeviceBusy < y.DeviceBusy
	}
	if rx != ry {
		return rx > ry
	}
	return x.FreeVRAM > y.FreeVRAM
}
