// Package random is the built-in routing policy "random": it sends a job to
// a node drawn uniformly from the healthy nodes that can hold it. The draw
// uses the random word the host put in the input (RoutingInput.Random),
// never a generator of the policy's own: the host takes it from an
// injected source (seeded in the simulator), so that a run replays, and a
// WASM guest has no real randomness anyway (ABI section 3). It is the
// baseline the other routing policies are measured against: it spreads
// load evenly in expectation and ignores what each node holds.
package random

import "github.com/kiln-gpu/kiln/sdk/policy"

// Random is the policy.
type Random struct{}

var _ policy.Router = (*Random)(nil)

// New returns the policy.
func New() *Random { return &Random{} }

// Route picks candidate number Random mod (number of candidates), in node
// order. The modulo's bias is below 2⁻⁵⁸ for up to 64 nodes.
func (*Random) Route(in *policy.RoutingInput, out *policy.RoutingOutput) policy.Status {
	candidates := uint64(0)
	for i := range in.Nodes {
		if policy.FitsNode(&in.Job, &in.Nodes[i]) {
			candidates++
		}
	}
	if candidates == 0 {
		return policy.StatusNoDecision
	}
	k := in.Random % candidates
	for i := range in.Nodes {
		if !policy.FitsNode(&in.Job, &in.Nodes[i]) {
			continue
		}
		if k == 0 {
			out.Node = uint32(i)
			return policy.StatusOK
		}
		k--
	}
	return policy.StatusNoDecision // unreachable: k < candidates
}
