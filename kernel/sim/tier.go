package sim

import "container/list"

// TierStats counts what happened in one tier during a run.
type TierStats struct {
	// Hits and Misses count lookups of a model in the tier.
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"`
	// Bytes is what the tier served: the bytes of its hits.
	Bytes int64 `json:"bytes"`
	// Evictions counts entries dropped to make room; EvictedBytes their bytes.
	Evictions    int64 `json:"evictions"`
	EvictedBytes int64 `json:"evicted_bytes"`
	// CapacityBytes is the tier's size (for VRAM: the usable bytes of all
	// devices together).
	CapacityBytes int64 `json:"capacity_bytes"`
}

// HitRatio is Hits / (Hits + Misses), 0 without lookups.
func (s TierStats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

// lruTier is a byte-bounded LRU cache of model ids: the host tiers (L2 RAM,
// L3 disk). It models contents only; the time to read from it is charged by
// the simulator from the tier's bandwidth.
//
// The live tiers (kernel/tier) evict through the eviction policy and pin
// entries during promotion; here promotions are instantaneous in virtual
// time (the time is charged to the job), so nothing is ever pinned in a host
// tier and plain LRU is what they would do.
type lruTier struct {
	capacity int64
	used     int64
	order    *list.List // front: most recently used; values are *lruEntry
	byID     map[string]*list.Element
	stats    TierStats
}

type lruEntry struct {
	id    string
	bytes int64
}

func newLRUTier(capacity int64) *lruTier {
	return &lruTier{capacity: capacity, order: list.New(), byID: map[string]*list.Element{},
		stats: TierStats{CapacityBytes: capacity}}
}

// lookup reports whether id is in the tier, counting a hit or a miss and
// refreshing the entry's recency on a hit.
func (t *lruTier) lookup(id string, bytes int64) bool {
	if e, ok := t.byID[id]; ok {
		t.order.MoveToFront(e)
		t.stats.Hits++
		t.stats.Bytes += bytes
		return true
	}
	t.stats.Misses++
	return false
}

// has reports whether id is in the tier without touching its statistics.
func (t *lruTier) has(id string) bool { _, ok := t.byID[id]; return ok }

// insert adds id, evicting least recently used entries until it fits. A
// model larger than the whole tier is not kept.
func (t *lruTier) insert(id string, bytes int64) {
	if bytes > t.capacity {
		return
	}
	if e, ok := t.byID[id]; ok {
		t.order.MoveToFront(e)
		return
	}
	for t.used+bytes > t.capacity {
		back := t.order.Back()
		v := back.Value.(*lruEntry)
		t.order.Remove(back)
		delete(t.byID, v.id)
		t.used -= v.bytes
		t.stats.Evictions++
		t.stats.EvictedBytes += v.bytes
	}
	t.byID[id] = t.order.PushFront(&lruEntry{id: id, bytes: bytes})
	t.used += bytes
}
