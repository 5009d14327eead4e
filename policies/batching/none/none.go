// Package none is the built-in batching policy "none": every job runs alone.
package none

import "github.com/kiln-gpu/kiln/sdk/policy"

// None is the policy.
type None struct{}

var _ policy.Batcher = (*None)(nil)

// New returns the policy.
func New() *None { return &None{} }

// Batch answers the lead alone, at once.
func (*None) Batch(in *policy.BatchingInput, out *policy.BatchingOutput) policy.Status {
	out.Batch = append(out.Batch, in.Lead)
	return policy.StatusOK
}
