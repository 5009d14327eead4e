// Package affinity is the built-in routing policy "affinity": it sends a
// job to the node where it would start soonest with its models in VRAM,
// the node that minimises
//
//	network delay + estimated wait + time to load the job's models there
//
// where a load's time depends on the fastest tier of that node that holds
// the model (VRAM: nothing; RAM: the host-to-device copy; disk: a disk read
// first; elsewhere: a read from the model source first) at the node's
// measured rates (policy.NodeLoadTime). This is balancing's affinity one
// level up, and what NVIDIA Dynamo's KV-aware router does for prefixes:
// the job goes where what it needs already is.
//
// Left alone, that sends every job of a hot model to one node. Spill-over
// is bounded as in consistent hashing with bounded loads (Mirrokni et al.,
// 2018), with load measured in work rather than in jobs (a Flux job is
// worth many SD 1.5 jobs): a node whose wait, with this job's share of its
// workers added, would exceed spill × (the cluster's mean wait + this job's
// estimated run time) is passed over while a node under its bound can hold
// the job. A hot model then spreads to more nodes instead of queueing on
// one, and the extra nodes are again chosen by what they hold.
package affinity

import (
	"time"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// Affinity is the policy.
type Affinity struct{}

var (
	_ policy.Router        = (*Affinity)(nil)
	_ policy.ParamDeclarer = (*Affinity)(nil)
)

// New returns the policy.
func New() *Affinity { return &Affinity{} }

// Params declares "spill", the load bound's factor (≥ 1; larger keeps more
// jobs on the nodes that hold their models, at the price of longer queues
// there).
func (*Affinity) Params() []policy.Param {
	return []policy.Param{
		{Name: "spill", Type: policy.ParamFloat, Default: 1.5, Min: 1, Max: 10},
	}
}

// Route picks the cheapest node under the load bound, or the cheapest node
// of all when every candidate is over it.
func (*Affinity) Route(in *policy.RoutingInput, out *policy.RoutingOutput) policy.Status {
	// The mean wait over the candidates, each weighted by its workers.
	var waited float64
	var workers uint64
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if policy.FitsNode(&in.Job, n) {
			w := uint64(max(n.Workers, 1))
			waited += float64(n.Wait) * float64(w)
			workers += w
		}
	}
	if workers == 0 {
		return policy.StatusNoDecision
	}
	bound := in.Param(0, 1.5) * (waited/float64(workers) + float64(in.Job.EstCost))
	best, bestOver := -1, true
	var bestCost time.Duration
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if !policy.FitsNode(&in.Job, n) {
			continue
		}
		over := float64(n.Wait)+float64(in.Job.EstCost)/float64(max(n.Workers, 1)) > bound
		cost := n.Delay + n.Wait
		for _, m := range in.Job.Models {
			cost += policy.NodeLoadTime(in.Models, m, n)
		}
		if best < 0 || (bestOver && !over) || (over == bestOver && cost < bestCost) {
			best, bestCost, bestOver = i, cost, over
		}
	}
	out.Node = uint32(best)
	return policy.StatusOK
}
