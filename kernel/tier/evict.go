package tier

import (
	"sort"
	"time"
)

// EntryView is what an eviction policy sees of one cached model, in every
// tier: dispatch.EntryView is this type, so one policy serves VRAM, RAM and
// disk. Worker names the worker holding the model in VRAM, and the tier
// ("disk", "ram") here.
type EntryView struct {
	Model   string
	Worker  string
	Bytes   uint64
	LastUse time.Time
	Hits    int
	Pinned  bool
	// Inserted is when the entry was loaded (zero: unknown).
	Inserted time.Time
	// LoadCost is how long the entry took to load (zero: unknown).
	LoadCost time.Duration
}

// Evictor picks entries to drop so that need more bytes fit. It returns
// indices into entries and must never pick a pinned one; the tier checks
// and ignores such an answer. dispatch.Evictor is this interface, so an
// eviction policy (the WASM host's adapter included) serves every tier.
type Evictor interface {
	Victims(need uint64, entries []EntryView) []int
}

// LRU evicts the least recently used unpinned entries first.
type LRU struct{}

var _ Evictor = LRU{}

// Victims returns unpinned entries, oldest use first, until need is covered;
// nil when all unpinned entries together are not enough.
func (LRU) Victims(need uint64, entries []EntryView) []int {
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
