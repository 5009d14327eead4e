package sim

import (
	"cmp"
	"slices"
	"time"
)

// OptimumVariant names the offline reference that optimal_load_time_s
// reports; RATIONALE.md explains the choice.
const OptimumVariant = "belady-farthest-next-use with sizes at every tier the run has, on the run's own request sequence and placement: " +
	"VRAM per device, a cached item being a (worker, model) pair, since each worker process holds its own copy, sharing the device's usable VRAM " +
	"(never evicting one the current job needs); then the RAM tier at its configured capacity on the sequence of those VRAM misses, " +
	"then the disk tier at its capacity on the sequence of RAM misses, every miss inserted (inclusive tiers); " +
	"first use of a model on the node charged what the run paid for it (a compulsory load), " +
	"a RAM hit a RAM→GPU transfer, a disk hit a disk read and transfer, a disk miss a source read too"

// SharedOptimumVariant names optimal_shared_load_time_s: the same replay
// with one copy of a model per device, whichever worker needs it, a lower
// reference that separate worker processes cannot reach.
const SharedOptimumVariant = "as optimal_variant, with one copy of a model per device shared by its workers"

// InfiniteRAMOptimumVariant names optimal_vram_load_time_s: the VRAM replay
// alone, every miss after a model's first use charged a RAM→GPU transfer,
// as if the RAM tier held everything. It was optimal_load_time_s before the
// optimum modelled the host tiers, and still judges the VRAM eviction
// decisions alone.
const InfiniteRAMOptimumVariant = "as optimal_variant, with a RAM tier that holds every model"

// vramMiss is one load the VRAM replay could not avoid: what the host
// tiers must serve, in the run's start order.
type vramMiss struct {
	use, k int // s.uses[use].models[k]
	device int
}

// optimalLoadTime replays the run's job starts through clairvoyant caches
// and returns the load time they would have charged: VRAM device by device
// (with perWorker, each worker's copy of a model is an item of its own:
// OptimumVariant; without, a device holds one copy: SharedOptimumVariant),
// then, unless infiniteRAM, the RAM and disk tiers at their capacities on
// the sequence of misses of the tier above (InfiniteRAMOptimumVariant
// otherwise).
//
// # Notes
//
// With sizes the problem is NP-hard; farthest-next-use is Belady's rule
// applied to variable sizes, a strong heuristic and not a proof of
// optimality. The tiers are replayed one after the other, each on the
// misses of the optimal tier above, which is how inclusive tiers see their
// requests, not a joint optimum over all tiers (that could, say, keep a
// model out of VRAM to save RAM room). It is a lower reference for the
// simulated policies rather than the exact best; a run that prefetches can
// come in below it, since the replay charges every read in full where the
// run overlapped some with queueing.
func (s *simulator) optimalLoadTime(perWorker, infiniteRAM bool) time.Duration {
	if s.parts != nil {
		var total time.Duration
		for _, p := range s.parts {
			total += p.optimalLoadTime(perWorker, infiniteRAM)
		}
		return total
	}
	var misses []vramMiss
	for _, d := range s.devices {
		misses = append(misses, s.beladyDevice(d, perWorker)...)
	}
	// Back into the run's start order: the order the host tiers saw.
	slices.SortFunc(misses, func(a, b vramMiss) int {
		if c := cmp.Compare(a.use, b.use); c != 0 {
			return c
		}
		return cmp.Compare(a.k, b.k)
	})
	var total time.Duration
	var ramHit, diskHit []bool
	if !infiniteRAM {
		ids := make([]string, len(misses))
		for i, m := range misses {
			ids[i] = s.uses[m.use].models[m.k]
		}
		ramCap := s.ram.capacity
		if s.cfg.NoRAMTier {
			ramCap = 0
		}
		ramHit = s.beladyHost(ids, ramCap)
		var below []string
		for i, id := range ids {
			if !ramHit[i] {
				below = append(below, id)
			}
		}
		diskHit = s.beladyHost(below, s.disk.capacity)
	}
	c := s.cfg.Cost
	next := 0 // index into diskHit
	for i, m := range misses {
		u := s.uses[m.use]
		id := u.models[m.k]
		mod := s.models[id]
		dev := s.devices[m.device].cost
		if u.cold[m.k] {
			// Compulsory: every tier misses; it still enters each, so
			// the replays above saw it.
			total += u.coldCost[m.k]
			if !infiniteRAM && !ramHit[i] {
				next++
			}
			continue
		}
		switch {
		case infiniteRAM || ramHit[i]:
			total += c.TransferTime(mod.Bytes, dev)
		case diskHit[next]:
			total += c.LoadTime(mod.Family, mod.Bytes, dev)
			next++
		default:
			total += s.remoteTime(mod.Bytes) + c.LoadTime(mod.Family, mod.Bytes, dev)
			next++
		}
	}
	return total
}

// beladyDevice replays the run's starts on device d through a clairvoyant
// cache of its usable VRAM and returns the loads it could not avoid.
func (s *simulator) beladyDevice(d *simDevice, perWorker bool) []vramMiss {
	var seq []int // indices into s.uses
	for i, u := range s.uses {
		if u.device == d.index {
			seq = append(seq, i)
		}
	}
	// Cache keys: the model, or the worker's copy of it.
	key := func(u use, m string) string {
		if perWorker {
			return u.worker + "\x00" + m
		}
		return m
	}
	// Positions of each key's uses, and a cursor into them.
	positions := map[string][]int{}
	for i, ui := range seq {
		u := s.uses[ui]
		for _, m := range u.models {
			positions[key(u, m)] = append(positions[key(u, m)], i)
		}
	}
	cursor := map[string]int{}
	next := func(m string, after int) int {
		p := positions[m]
		c := cursor[m]
		for c < len(p) && p[c] <= after {
			c++
		}
		cursor[m] = c
		if c == len(p) {
			return int(^uint(0) >> 1) // never again
		}
		return p[c]
	}
	capacity := d.ledger.Usable()
	cache := map[string]uint64{}
	var order []string // cache keys in insertion order: deterministic scans
	var used uint64
	var out []vramMiss
	for i, ui := range seq {
		u := s.uses[ui]
		inGroup := func(c string) bool {
			for _, g := range u.models {
				if key(u, g) == c {
					return true
				}
			}
			return false
		}
		for k, m := range u.models {
			m0 := m
			m = key(u, m)
			if _, ok := cache[m]; ok {
				continue
			}
			b := uint64(s.models[m0].Bytes)
			out = append(out, vramMiss{use: ui, k: k, device: d.index})
			for used+b > capacity {
				victim, vNext, vBytes := -1, -1, uint64(0)
				for idx, c := range order {
					if inGroup(c) {
						continue
					}
					n := next(c, i)
					if n > vNext || (n == vNext && cache[c] > vBytes) {
						victim, vNext, vBytes = idx, n, cache[c]
					}
				}
				if victim < 0 {
					break
				}
				used -= cache[order[victim]]
				delete(cache, order[victim])
				order = append(order[:victim], order[victim+1:]...)
			}
			if used+b <= capacity {
				cache[m] = b
				order = append(order, m)
				used += b
			}
		}
	}
	return out
}

// beladyHost replays a host tier's requests (model ids, in order) through
// a clairvoyant cache of capacity bytes that inserts every miss, evicting
// the entry used farthest in the future (never-again first, larger first
// on ties), and reports which requests hit.
func (s *simulator) beladyHost(ids []string, capacity int64) []bool {
	positions := map[string][]int{}
	for i, id := range ids {
		positions[id] = append(positions[id], i)
	}
	cursor := map[string]int{}
	next := func(id string, after int) int {
		p := positions[id]
		c := cursor[id]
		for c < len(p) && p[c] <= after {
			c++
		}
		cursor[id] = c
		if c == len(p) {
			return int(^uint(0) >> 1)
		}
		return p[c]
	}
	hit := make([]bool, len(ids))
	cache := map[string]int64{}
	var order []string
	var used int64
	for i, id := range ids {
		if _, ok := cache[id]; ok {
			hit[i] = true
			continue
		}
		b := s.models[id].Bytes
		if b > capacity {
			continue // the tier skips what does not fit
		}
		for used+b > capacity {
			victim, vNext, vBytes := -1, -1, int64(0)
			for idx, c := range order {
				n := next(c, i)
				if n > vNext || (n == vNext && cache[c] > vBytes) {
					victim, vNext, vBytes = idx, n, cache[c]
				}
			}
			used -= cache[order[victim]]
			delete(cache, order[victim])
			order = slices.Delete(order, victim, victim+1)
		}
		cache[id] = b
		order = append(order, id)
		used += b
	}
	return hit
}
