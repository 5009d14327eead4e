package sim

import (
	"time"
)

// OptimumVariant names the offline reference that optimal_load_time_s
// reports; RATIONALE.md explains the choice.
const OptimumVariant = "belady-farthest-next-use with sizes, per device, on the run's own request sequence and placement; " +
	"a cached item is a (worker, model) pair, since each worker process holds its own copy, sharing the device's usable VRAM; " +
	"evicts the entry used farthest in the future (never-again first, larger first on ties, never one the current job needs) until the load fits; " +
	"first use of a model on the node charged what the run paid for it (a compulsory load), every other miss a RAM→GPU transfer"

// SharedOptimumVariant names optimal_shared_load_time_s: the same replay
// with one copy of a model per device, whichever worker needs it, a lower
// reference that separate worker processes cannot reach.
const SharedOptimumVariant = "as optimal_variant, with one copy of a model per device shared by its workers"

// optimalLoadTime replays the run's job starts device by device through a
// clairvoyant cache of the device's usable VRAM and returns the load time
// it would have charged: with perWorker, each worker's copy of a model is
// an item of its own (OptimumVariant); without, a device holds one copy
// (SharedOptimumVariant).
//
// # Notes
//
// With sizes the problem is NP-hard; farthest-next-use is Belady's rule
// applied to variable sizes, a strong heuristic and not a proof of
// optimality. It also treats a device as one cache (no copy per worker)
// and charges misses at the cheapest tier that could serve them, so it is
// a lower reference for the simulated policies rather than the exact best.
func (s *simulator) optimalLoadTime(perWorker bool) time.Duration {
	var total time.Duration
	for _, d := range s.devices {
		var seq []use
		for _, u := range s.uses {
			if u.device == d.index {
				seq = append(seq, u)
			}
		}
		total += s.beladyDevice(d, seq, perWorker)
	}
	return total
}

func (s *simulator) beladyDevice(d *simDevice, seq []use, perWorker bool) time.Duration {
	// Cache keys: the model, or the worker's copy of it.
	key := func(u use, m string) string {
		if perWorker {
			return u.worker + "\x00" + m
		}
		return m
	}
	// Positions of each key's uses, and a cursor into them.
	positions := map[string][]int{}
	for i, u := range seq {
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
	var total time.Duration
	for i, u := range seq {
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
			mod := s.models[m0]
			b := uint64(mod.Bytes)
			if u.cold[k] {
				total += u.coldCost[k]
			} else {
				total += s.cfg.Cost.TransferTime(mod.Bytes, d.cost)
			}
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
	return total
}
