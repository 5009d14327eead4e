// Package affinity is the built-in balancing policy "affinity": it places a
// job on the worker that minimises
//
//	estimated wait + time to load the job's models that it lacks
//
// where load time comes from the model's residency across tiers and the
// measured bandwidths (policy.LoadTime). To keep one hot model from piling
// onto one GPU, spill-over is bounded as in consistent hashing with bounded
// loads: a worker whose device would have more than spill × (mean busy per device + 1)
// busy workers is skipped while any other candidate is left.
package affinity

import (
	"math"
	"time"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// Affinity is the policy.
type Affinity struct{}

var (
	_ policy.Balancer      = (*Affinity)(nil)
	_ policy.ParamDeclarer = (*Affinity)(nil)
)

// New returns the policy.
func New() *Affinity { return &Affinity{} }

// Params declares "spill" (the load bound's factor, ≥ 1) and
// "degraded_penalty_ms" (added to a degraded device's cost).
func (*Affinity) Params() []policy.Param {
	return []policy.Param{
		{Name: "spill", Type: policy.ParamFloat, Default: 1.25, Min: 1, Max: 10},
		{Name: "degraded_penalty_ms", Type: policy.ParamInt, Default: 10000, Min: 0, Max: 3_600_000},
	}
}

// Balance picks the cheapest worker under the load bound.
func (*Affinity) Balance(in *policy.BalancingInput, out *policy.BalancingOutput) policy.Status {
	if len(in.Workers) == 0 {
		return policy.StatusNoDecision
	}
	// The mean number of busy workers per device.
	devBusy := map[uint32]uint32{}
	for _, w := range in.Workers {
		devBusy[w.Device] = max(devBusy[w.Device], w.DeviceBusy)
	}
	var busy float64
	for _, b := range devBusy {
		busy += float64(b)
	}
	bound := uint32(math.Ceil(in.Param(0, 1.25) * (busy/float64(len(devBusy)) + 1)))
	penalty := time.Duration(in.Param(1, 10000)) * time.Millisecond
	best, bestOver := -1, true
	var bestCost time.Duration
	for i := range in.Workers {
		w := &in.Workers[i]
		if !w.Idle || !policy.Fits(&in.Job, w) {
			continue
		}
		cost := w.Wait
		for _, m := range in.Job.Models {
			cost += policy.LoadTime(in.Models, m, w)
		}
		if w.Degraded {
			cost += penalty
		}
		over := w.DeviceBusy+1 > bound
		if best < 0 || (bestOver && !over) || (over == bestOver && (cost < bestCost ||
			cost == bestCost && w.DeviceBusy < in.Workers[best].DeviceBusy)) {
			best, bestCost, bestOver = i, cost, over
		}
	}
	if best < 0 {
		return policy.StatusNoDecision
	}
	out.Worker = uint32(best)
	return policy.StatusOK
}
