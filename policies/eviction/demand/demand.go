// Package demand is the built-in eviction policy "demand": it drops first
// the entries with the lowest expected reload cost avoided per byte,
//
//	score = recent demand × load cost / bytes
//
// where recent demand is the kernel's decayed count of recent jobs asking
// for the entry's model (ABI 1.3's demand section: each job adds 1, halving
// every 30 minutes), load cost the entry's measured load time and bytes its
// size; among equal scores (a model no recent job asked for scores 0) the
// least recently used goes first.
//
// Unlike GDSF's frequency (an entry's hits since it was inserted, lost when
// it is evicted), the demand counts every job, whichever tier served it,
// and outlives residency: a model that is asked for often but was evicted
// once comes back with its history. The policy keeps no tags and no state,
// so any pooled instance gives the same answer; with a host that sends no
// demand (ABI 1.2) every score is 0 and it is LRU.
package demand

import (
	"cmp"
	"slices"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// Demand is the eviction policy.
type Demand struct{}

var (
	_ policy.Evictor       = (*Demand)(nil)
	_ policy.ParamDeclarer = (*Demand)(nil)
)

// New returns the policy.
func New() *Demand { return &Demand{} }

// Params declares "prefetch".
func (*Demand) Params() []policy.Param {
	return []policy.Param{{Name: "prefetch", Type: policy.ParamBool, Default: 1, Min: 0, Max: 1}}
}

// Evict drops the lowest scores first, the least recently used among equals.
func (*Demand) Evict(in *policy.EvictionInput, out *policy.EvictionOutput) policy.Status {
	score := make([]float64, len(in.Entries))
	cands := make([]uint32, 0, len(in.Entries))
	for i, e := range in.Entries {
		if e.Pinned {
			continue
		}
		cands = append(cands, uint32(i))
		// A load cost floor of 1 ms keeps an unmeasured entry's demand
		// worth something; bytes are at least 1.
		score[i] = in.EntryDemand(i) * max(e.LoadCost.Seconds(), 1e-3) / float64(max(e.Bytes, 1))
	}
	slices.SortStableFunc(cands, func(a, b uint32) int {
		if c := cmp.Compare(score[a], score[b]); c != 0 {
			return c
		}
		// The longer unused goes first.
		return cmp.Compare(in.Entries[b].SinceUse, in.Entries[a].SinceUse)
	})
	if !policy.TakeVictims(in, out, cands) {
		return policy.StatusNoDecision
	}
	if in.Param(0, 1) != 0 {
		policy.FillPrefetch(in, out)
	}
	return policy.StatusOK
}
