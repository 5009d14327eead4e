// Package gdsf is the built-in eviction policy "gdsf", Greedy-Dual-Size-
// Frequency (Cherkasova 1998): each entry has a priority
//
//	H = L + frequency × cost / size
//
// where cost is the entry's measured load time and L is the priority of the
// last entry evicted (the "inflation" that ages entries which stop being
// used). The lowest H goes first.
//
// H is fixed when an entry is loaded or used, as in the paper: the policy
// keeps it in the entry's tag (upper 32 bits: H as float32; lower 32: the
// hit count it was computed at) and L in State[0], so the policy itself is
// stateless and any pooled instance gives the same answer.
package gdsf

import (
	"cmp"
	"math"
	"slices"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// GDSF is the size- and load-cost-aware eviction policy.
type GDSF struct{}

var (
	_ policy.Evictor       = (*GDSF)(nil)
	_ policy.ParamDeclarer = (*GDSF)(nil)
)

// New returns the policy.
func New() *GDSF { return &GDSF{} }

// Params declares "prefetch".
func (*GDSF) Params() []policy.Param {
	return []policy.Param{{Name: "prefetch", Type: policy.ParamBool, Default: 1, Min: 0, Max: 1}}
}

// Evict computes or refreshes H for each entry and drops the lowest first.
func (*GDSF) Evict(in *policy.EvictionInput, out *policy.EvictionOutput) policy.Status {
	l := math.Float64frombits(in.State[0])
	h := make([]float64, len(in.Entries))
	for i, e := range in.Entries {
		hv, hits := float32(math.Float32frombits(uint32(e.Tag>>32))), uint32(e.Tag)
		if e.Tag == 0 || hits != e.Hits {
			size := float64(max(e.Bytes, 1)) / (1 << 20) // MiB: keeps H in float32's range
			cost := max(e.LoadCost.Seconds(), 1e-3)
			hv = float32(l + float64(e.Hits+1)*cost/size)
			out.Tags = append(out.Tags, policy.TagUpdate{Entry: uint32(i), Tag: uint64(math.Float32bits(hv))<<32 | uint64(e.Hits)})
		}
		h[i] = float64(hv)
	}
	cands := make([]uint32, 0, len(in.Entries))
	for i, e := range in.Entries {
		if !e.Pinned {
			cands = append(cands, uint32(i))
		}
	}
	slices.SortFunc(cands, func(a, b uint32) int {
		switch {
		case h[a] < h[b]:
			return -1
		case h[a] > h[b]:
			return 1
		}
		return cmp.Compare(a, b) // equal keys keep their input order
	})
	if !policy.TakeVictims(in, out, cands) {
		return policy.StatusNoDecision
	}
	for _, i := range out.Victims {
		l = max(l, h[i])
	}
	out.State[0] = math.Float64bits(l)
	if in.Param(0, 1) != 0 {
		policy.FillPrefetch(in, out)
	}
	return policy.StatusOK
}
