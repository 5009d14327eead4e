// Package roundrobin is the built-in balancing policy "round-robin": jobs
// go to the idle workers that can hold them in turn. The position of the
// last choice travels in State[0], so pooled instances share the rotation.
package roundrobin

import "github.com/kiln-gpu/kiln/sdk/policy"

// RoundRobin is the policy.
type RoundRobin struct{}

var _ policy.Balancer = (*RoundRobin)(nil)

// New returns the policy.
func New() *RoundRobin { return &RoundRobin{} }

// Balance picks the first suitable worker after the last one chosen.
func (*RoundRobin) Balance(in *policy.BalancingInput, out *policy.BalancingOutput) policy.Status {
	n := uint64(len(in.Workers))
	for k := uint64(1); k <= n; k++ {
		i := (in.State[0] + k) % n
		if w := &in.Workers[i]; w.Idle && policy.Fits(&in.Job, w) {
			out.Worker = uint32(i)
			out.State[0] = i
			return policy.StatusOK
		}
	}
	return policy.StatusNoDecision
}
