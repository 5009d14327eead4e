// Package leastloaded is the built-in routing policy "least-loaded": it
// sends a job to the healthy node, among those that can hold it, with the
// fewest outstanding jobs (queued and running) per worker; ties go to the
// shorter estimated wait, then to the node with more free VRAM, then to the
// first. It balances load and ignores what each node holds, as
// join-the-shortest-queue does. It is also the host's fallback: it answers
// for a routing policy that faults.
package leastloaded

import "github.com/kiln-gpu/kiln/sdk/policy"

// LeastLoaded is the policy.
type LeastLoaded struct{}

var _ policy.Router = (*LeastLoaded)(nil)

// New returns the policy.
func New() *LeastLoaded { return &LeastLoaded{} }

// Route picks the node with the least load per worker.
func (*LeastLoaded) Route(in *policy.RoutingInput, out *policy.RoutingOutput) policy.Status {
	best := -1
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if !policy.FitsNode(&in.Job, n) {
			continue
		}
		if best < 0 || less(n, &in.Nodes[best]) {
			best = i
		}
	}
	if best < 0 {
		return policy.StatusNoDecision
	}
	out.Node = uint32(best)
	return policy.StatusOK
}

// less orders a before b. Loads per worker are compared as cross products
// of whole numbers, so that equal loads tie exactly.
func less(a, b *policy.Node) bool {
	la := uint64(a.Queued+a.Running) * uint64(max(b.Workers, 1))
	lb := uint64(b.Queued+b.Running) * uint64(max(a.Workers, 1))
	if la != lb {
		return la < lb
	}
	if a.Wait != b.Wait {
		return a.Wait < b.Wait
	}
	return a.FreeVRAM > b.FreeVRAM
}
