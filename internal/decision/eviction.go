package decision

import "time"

// EntryView is what an eviction policy sees of one cached model, in every
// tier, so that one policy serves VRAM, RAM and disk. Worker names the
// worker holding the model in VRAM, and the tier ("disk", "ram") in the
// host tiers.
//
// Its fields feed the ABI's entry record (sdk/policy.Entry) as JobView's
// feed the job record; abi:"-" marks those internal/policy interns.
type EntryView struct {
	Model   string `abi:"-"`
	Worker  string `abi:"-"`
	Bytes   uint64
	LastUse time.Time
	Hits    int
	Pinned  bool
	// Inserted is when the entry was loaded (zero: unknown).
	Inserted time.Time
	// LoadCost is how long the entry took to load (zero: unknown).
	LoadCost time.Duration
	// RecentDemand is the kernel's decayed count of recent jobs asking
	// for the model (internal/predict.Demand: each job adds 1, halving
	// every 30 minutes), whichever tier served them and whether or not
	// the entry was cached then. It feeds the eviction input's demand
	// section (ABI 1.3), not the entry record, so the adapter copies it.
	RecentDemand float64 `abi:"-"`
}

// Evictor picks entries to drop so that need more bytes fit. It returns
// indices into entries and must never pick a pinned one; the caller (the
// dispatcher for VRAM, the tier manager for RAM and disk) checks and treats
// such an answer as a policy fault.
type Evictor interface {
	Victims(need uint64, entries []EntryView) []int
}

// Prefetcher is implemented by evictors whose policy also chooses which
// models to bring into a cache before anyone asks for them (the prefetch
// half of an eviction decision; internal/policy's Evictor). wanted are
// models queued jobs need, wantedBytes their sizes and waiting how many of
// those jobs need each, index for index; free is the room the cache has
// and entries what it holds. The answer names models among wanted, best
// first; it evicts nothing. The dispatcher's lookahead finds it by type
// assertion on the Evictor.
type Prefetcher interface {
	PrefetchIDs(free uint64, entries []EntryView, wanted []string, wantedBytes []uint64, waiting []int) []string
}
