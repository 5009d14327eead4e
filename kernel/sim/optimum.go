package sim

import (
	"time"
)

// OptimumVariant names the offline reference that optimal_load_time_s
// reports; RATIONALE.md explains the choice.
const OptimumVariant = "belady-farthest-next-use with sizes, per device, on the run's own request sequence; " +
	"evicts the unpinned entry used farthest in the future (never-again first, larger first on ties) until the load fits; " +
	"first use of a model on the node charged what the run paid for it (a compulsory load), every other miss a RAM→GPU transfer"

// optimalLoadTime replays the run's job starts device by device through a
// clairvoyant cache of the device's usable VRAM and returns the load time
// it would have charged.
//
// # Notes
//
// With sizes the problem is NP-hard; farthest-next-use is Belady's rule
// applied to variable sizes, a strong heuristic and not a proof of
// optimality. It also treats a device as one cache (no copy per worker)
// and charges misses at the cheapest tier that could serve them, so it is
// a lower reference for the simulated policies rather than the exact best.
func (s *simulator) optimalLoadTime() time.Duration {
	var total time.Duration
	for _, d := range s.devices {
		var seq []use
		for _, u := range s.uses {
			if u.device == d.index {
				seq = append(seq, u)
			}
		}
		total += s.beladyDevice(d, seq)
	}
	return total
}

func (s *simulator) beladyDevice(d *simDevice, seq []use) time.Duration {
	// Positions of each model's uses, and a cursor into them.
	positions := map[string][]int{}
	for i, u := range seq {
		for _, m := range u.models {
			positions[m] = append(positions[m], i)
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
		inGroup := func(m string) bool {
			for _, g := range u.models {
				if g == m {
					return true
				}
			}
			return false
		}
		for k, m := range u.models {
			if _, ok := cache[m]; ok {
				continue
			}
			mod := s.models[m]
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
