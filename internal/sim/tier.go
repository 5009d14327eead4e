package sim

import (
	"sort"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/predict"
)

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

// hostTier is a byte-bounded cache of model ids standing in for a host
// tier (L2 RAM, L3 disk). It keeps contents only (the time to read from it
// is charged by the simulator from the tier's bandwidth) and makes room as
// internal/tier's store does: the tier's eviction policy (a decision.Evictor: the
// active eviction policy, as a node's tiers) is asked for victims down to
// the target fill, then for exactly what is needed, over the entries sorted
// by model.
//
// Promotions are instantaneous in virtual time, so nothing is ever pinned
// in a host tier.
type hostTier struct {
	name     string
	capacity int64
	target   float64
	used     int64
	ev       decision.Evictor
	// onEvict, when set, hears each eviction (Options.OnEvict).
	onEvict func(tier, model string)
	// demand is the node's recent demand (simulator.demand; nil: 0).
	demand  *predict.Demand
	entries map[string]*hostEntry
	stats   TierStats
}

type hostEntry struct {
	bytes   int64
	lastUse time.Duration
	hits    int
	// inserted and took are when the entry came in and what its
	// promotion cost, which the live store shows cost-aware policies
	// (decision.EntryView.Inserted, LoadCost).
	inserted time.Duration
	took     time.Duration
}

func newHostTier(name string, capacity int64, target float64, ev decision.Evictor) *hostTier {
	if ev == nil {
		ev = policy.Native().NewEvictor()
	}
	if target <= 0 || target > 1 {
		target = 0.9
	}
	return &hostTier{name: name, capacity: capacity, target: target, ev: ev, entries: map[string]*hostEntry{},
		stats: TierStats{CapacityBytes: capacity}}
}

// lookup reports whether id is in the tier, counting a hit or a miss and
// refreshing the entry's recency on a hit.
func (t *hostTier) lookup(id string, bytes int64, now time.Duration) bool {
	if e, ok := t.entries[id]; ok {
		e.lastUse = now
		e.hits++
		t.stats.Hits++
		t.stats.Bytes += bytes
		return true
	}
	t.stats.Misses++
	return false
}

// has reports whether id is in the tier without touching its statistics.
func (t *hostTier) has(id string) bool { _, ok := t.entries[id]; return ok }

// insert adds id, which took took to promote into the tier, evicting
// through the tier's policy until it fits, and returns the evicted ids. A model larger than the whole tier is not kept,
// nor one the policy finds no room for.
func (t *hostTier) insert(id string, bytes int64, now, took time.Duration) []string {
	if bytes > t.capacity {
		return nil
	}
	if e, ok := t.entries[id]; ok {
		e.lastUse = now
		return nil
	}
	var gone []string
	// As internal/tier's store: toward the target fill, then, when the
	// victims fell short, for exactly the rest (the policy host holds that
	// answer to the need).
	target := int64(float64(t.capacity) * t.target)
	for round := 0; round < 2 && t.used+bytes > t.capacity; round++ {
		need := t.used + bytes - t.capacity
		if round == 0 {
			need = t.used + bytes - min(target, t.capacity-bytes)
		}
		ids := make([]string, 0, len(t.entries))
		for k := range t.entries {
			ids = append(ids, k)
		}
		sort.Strings(ids)
		views := t.views(ids, now)
		victims := t.ev.Victims(uint64(need), views)
		for _, i := range victims {
			if i < 0 || i >= len(views) {
				victims = nil
				break
			}
		}
		for _, i := range victims {
			k := ids[i]
			if e, ok := t.entries[k]; ok {
				delete(t.entries, k)
				t.used -= e.bytes
				t.stats.Evictions++
				t.stats.EvictedBytes += e.bytes
				gone = append(gone, k)
				if t.onEvict != nil {
					t.onEvict(t.name, k)
				}
			}
		}
	}
	if t.used+bytes > t.capacity {
		return gone
	}
	t.entries[id] = &hostEntry{bytes: bytes, lastUse: now, inserted: now, took: took}
	t.used += bytes
	return gone
}

// views describes the entries named by ids as internal/tier's store shows
// them to its eviction policy.
func (t *hostTier) views(ids []string, now time.Duration) []decision.EntryView {
	views := make([]decision.EntryView, len(ids))
	for i, k := range ids {
		e := t.entries[k]
		views[i] = decision.EntryView{Model: k, Worker: t.name, Bytes: uint64(e.bytes), LastUse: epoch.Add(e.lastUse), Hits: e.hits,
			Inserted: epoch.Add(e.inserted), LoadCost: e.took, RecentDemand: t.demand.Of(epoch.Add(now), k)}
	}
	return views
}
