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
//
// Prices within near × the cheapest node's load time of the cheapest price
// are treated as equal, and among them the node with the most free VRAM
// wins. Such prices are common: every node with a worker to spare reports
// no wait, and a model that no node holds costs the same to load on all of
// them (or nearly: measured rates differ by a few percent). Taking the
// first node in such a tie, as the strict minimum does, sent the first
// loads to the front of the node list — at 16 simulated nodes the last two
// or three ran few jobs or none — so the first nodes evicted each other's
// models and loaded them again while the rest of the cluster's VRAM stayed
// empty. The node with the most free VRAM can take the load without
// evicting anything, so the cluster's VRAM together holds more distinct
// models.
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

// The parameters' defaults. Spill was 1.5 before near-ties went to the
// node with the most free VRAM; that keeps each model on fewer nodes, so
// the queues at its nodes grow, and the tighter bound lets a hot model
// spread sooner (BENCHMARKS.md, "Routing across nodes").
const (
	defaultSpill = 1.2
	defaultNear  = 0.2
)

// Params declares "spill", the load bound's factor (≥ 1; larger keeps more
// jobs on the nodes that hold their models, at the price of longer queues
// there), and "near": prices within near × the cheapest node's load time
// of the cheapest price count as equal (0: only equal prices; larger
// trades a little of this job's latency for spreading models over the
// cluster's free VRAM).
func (*Affinity) Params() []policy.Param {
	return []policy.Param{
		{Name: "spill", Type: policy.ParamFloat, Default: defaultSpill, Min: 1, Max: 10},
		{Name: "near", Type: policy.ParamFloat, Default: defaultNear, Min: 0, Max: 1},
	}
}

// Route picks, among the nodes under the load bound (or all of them when
// every candidate is over it), the node with the most free VRAM among
// those priced within near of the cheapest.
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
	bound := in.Param(0, defaultSpill) * (waited/float64(workers) + float64(in.Job.EstCost))
	over := func(n *policy.Node) bool {
		return float64(n.Wait)+float64(in.Job.EstCost)/float64(max(n.Workers, 1)) > bound
	}
	// First the cheapest price, then the node with the most free VRAM
	// within near of it. Prices are computed twice rather than kept, so
	// that a WASM guest's steady state allocates nothing.
	cheapest, cheapestOver := time.Duration(-1), true
	var cheapestLoads time.Duration
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if !policy.FitsNode(&in.Job, n) {
			continue
		}
		o, p := over(n), price(in, n)
		if cheapest < 0 || (cheapestOver && !o) || (o == cheapestOver && p < cheapest) {
			cheapest, cheapestOver, cheapestLoads = p, o, p-n.Delay-n.Wait
		}
	}
	// The margin is a fraction of the cheapest node's loads, not of its
	// whole price: it stands for the spread of measured load rates, and
	// near saturation, where waits are long, a fraction of the wait would
	// let a job queue seconds longer for free VRAM (at 16 simulated nodes
	// and 0.5 jobs/s each, Azure's p95 on one seed was 103 s with the
	// margin on the whole price, 64 s with it on the loads).
	limit := cheapest + time.Duration(in.Param(1, defaultNear)*float64(cheapestLoads))
	best := -1
	var bestPrice time.Duration
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if !policy.FitsNode(&in.Job, n) || over(n) != cheapestOver {
			continue
		}
		p := price(in, n)
		if p > limit {
			continue
		}
		if best < 0 || n.FreeVRAM > in.Nodes[best].FreeVRAM || (n.FreeVRAM == in.Nodes[best].FreeVRAM && p < bestPrice) {
			best, bestPrice = i, p
		}
	}
	out.Node = uint32(best)
	return policy.StatusOK
}

// price is the time until the job could start on n with its models in
// VRAM: the network hop, n's wait and the loads from n's fastest tiers.
func price(in *policy.RoutingInput, n *policy.Node) time.Duration {
	p := n.Delay + n.Wait
	for _, m := range in.Job.Models {
		p += policy.NodeLoadTime(in.Models, m, n)
	}
	return p
}
