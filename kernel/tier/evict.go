package tier

import (
	"sort"

	"github.com/kiln-gpu/kiln/kernel/decision"
)

// LRU evicts the least recently used unpinned entries first.
type LRU struct{}

var _ decision.Evictor = LRU{}

// Victims returns unpinned entries, oldest use first, until need is covered;
// nil when all unpinned entries together are not enough.
func (LRU) Victims(need uint64, entries []decision.EntryView) []int {
	cands := make([]int, 0, len(entries))
	for i, e := range entries {
		if !e.Pinned {
			cands = append(cands, i)
		}
	}
	sort.SliceStable(cands, func(a, b int) bool { return entries[cands[a]].LastUse.Before(entries[cands[b]].LastUse) })
	var got uint64
	var out []int
	for _, i := range cands {
		if got >= need {
			break
		}
		out = append(out, i)
		got += entries[i].Bytes
	}
	if got < need {
		return nil
	}
	return out
}
