// Package samemodel is the built-in batching policy "same-model": the lead
// job runs with the oldest queued jobs that share its batch key (same models,
// compatible parameters), up to max_size jobs and as many as the VRAM left on
// the best idle worker can hold (each extra member costs its BatchVRAM). A
// batch that is not full waits for company until the lead is max_wait_ms
// old.
package samemodel

import (
	"cmp"
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// SameModel is the policy.
type SameModel struct{}

var (
	_ policy.Batcher       = (*SameModel)(nil)
	_ policy.ParamDeclarer = (*SameModel)(nil)
)

// New returns the policy.
func New() *SameModel { return &SameModel{} }

// Params declares "max_size" and "max_wait_ms".
func (*SameModel) Params() []policy.Param {
	return []policy.Param{
		{Name: "max_size", Type: policy.ParamInt, Default: 4, Min: 1, Max: 64},
		{Name: "max_wait_ms", Type: policy.ParamInt, Default: 200, Min: 0, Max: 60_000},
	}
}

// Batch groups the lead with compatible jobs.
func (*SameModel) Batch(in *policy.BatchingInput, out *policy.BatchingOutput) policy.Status {
	lead := &in.Jobs[in.Lead]
	out.Batch = append(out.Batch, in.Lead)
	maxSize := int(in.Param(0, 4))
	maxWait := time.Duration(in.Param(1, 200)) * time.Millisecond
	if lead.BatchKey == 0 || maxSize <= 1 {
		return policy.StatusOK
	}
	// The room on the idle worker that can hold the most after the lead.
	var room uint64
	for i := range in.Workers {
		w := &in.Workers[i]
		if !w.Idle {
			continue
		}
		r := w.FreeVRAM
		for _, m := range lead.Models {
			if slices.Contains(w.Resident, m) {
				r += in.Models[m].Bytes
			}
		}
		room = max(room, r-min(r, lead.VRAM))
	}
	cands := make([]uint32, 0, len(in.Jobs))
	for i := range in.Jobs {
		j := &in.Jobs[i]
		if uint32(i) != in.Lead && j.BatchKey == lead.BatchKey && slices.Equal(j.Models, lead.Models) {
			cands = append(cands, uint32(i))
		}
	}
	slices.SortFunc(cands, func(a, b uint32) int {
		switch x, y := in.Jobs[a].Seq, in.Jobs[b].Seq; {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return cmp.Compare(a, b) // equal keys keep their input order
	})
	var used uint64
	for _, c := range cands {
		if len(out.Batch) >= maxSize {
			break
		}
		if bv := in.Jobs[c].BatchVRAM; bv > 0 {
			if used+bv > room {
				break
			}
			used += bv
		}
		out.Batch = append(out.Batch, c)
	}
	if len(out.Batch) < maxSize && len(out.Batch) == len(cands)+1 && lead.Age < maxWait {
		out.Wait = maxWait - lead.Age
	}
	return policy.StatusOK
}
