// Package lru is the built-in eviction policy "lru": it drops the least
// recently used unpinned entries until the need is covered.
package lru

import (
	"cmp"
	"slices"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// LRU evicts least recently used first.
type LRU struct{}

var (
	_ policy.Evictor       = (*LRU)(nil)
	_ policy.ParamDeclarer = (*LRU)(nil)
)

// New returns the policy.
func New() *LRU { return &LRU{} }

// Params declares "prefetch" (1: prefetch wanted models into the room left).
func (*LRU) Params() []policy.Param {
	return []policy.Param{{Name: "prefetch", Type: policy.ParamBool, Default: 1, Min: 0, Max: 1}}
}

// Evict picks unpinned entries, the longest unused first, until Need bytes
// are free; it answers StatusNoDecision when even all of them are not enough.
func (*LRU) Evict(in *policy.EvictionInput, out *policy.EvictionOutput) policy.Status {
	cands := make([]uint32, 0, len(in.Entries))
	for i, e := range in.Entries {
		if !e.Pinned {
			cands = append(cands, uint32(i))
		}
	}
	slices.SortFunc(cands, func(a, b uint32) int {
		x, y := in.Entries[a].SinceUse, in.Entries[b].SinceUse
		switch {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return cmp.Compare(a, b) // equal keys keep their input order
	})
	if !policy.TakeVictims(in, out, cands) {
		return policy.StatusNoDecision
	}
	if in.Param(0, 1) != 0 {
		policy.FillPrefetch(in, out)
	}
	return policy.StatusOK
}
