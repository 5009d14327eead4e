package predict

import "sort"

// Entry is a model a cache (the RAM tier, a device's idle VRAM) holds.
type Entry struct {
	Model string
	Bytes int64
	// Protected entries are never displaced: a queued job needs them, or
	// they are pinned (a running job's).
	Protected bool
}

// Room is a cache as a warming decision sees it.
type Room struct {
	Capacity int64
	Entries  []Entry
	// Reserved are bytes already on their way in (the lookahead's
	// transfers), counted as used.
	Reserved int64
	// Above are models a faster cache already holds (a worker's VRAM): a
	// job that asks for one is served from there and never reads this
	// room, so warming one here is waste.
	Above map[string]bool
	// ReloadCost is what a job would wait for model if this room lacked it
	// (a disk read, or a source read and a disk read); nil prices a model
	// by its bytes, as loads are bandwidth-bound.
	ReloadCost func(model string) float64
}

// WarmOptions bound a warming decision. Zero fields take the defaults.
type WarmOptions struct {
	// MinP is the least chance a model needs to be warmed (default 0.05).
	MinP float64
	// Margin is how much more a warm must be expected to save than what it
	// displaces is expected to cost (default 2): without it two models of
	// equal worth would displace each other on every call, moving bytes for
	// nothing, and a guess that merely ties the entries it drops would pay
	// a transfer to gain nothing.
	Margin float64
	// MaxBytes bounds the bytes one decision brings in beyond its first
	// model (default: a quarter of the capacity), so that a wrong guess
	// costs a bounded transfer while a cache smaller than four models can
	// still be warmed one model at a time.
	MaxBytes int64
}

// Plan is a warming decision: drop Evict (none of them protected), then
// bring in Warm, best first.
type Plan struct {
	Warm  []string
	Evict []string
	// WarmBytes are the bytes Warm brings in.
	WarmBytes int64
	// Refused counts the candidates (chance at least MinP, not held) the
	// cost–benefit gate turned away: no room among entries worth less.
	Refused int
}

// PlanWarm decides which of the ranked models to bring into room, and which
// unprotected entries to drop for them. It weighs what a warm is expected
// to save against what it is expected to cost: a model m is worth
// P(m) × ReloadCost(m), the load time a job would save by finding it here
// (P from ranked, 0 when unranked), and an entry displaced for it costs its
// own worth, since the next job that asks for it reads it again. Entries go
// cheapest per byte first, and m comes in only when it fits in the free
// room plus the room of entries whose worth together, times Margin, is
// below m's (the gate). A model a faster cache holds (Room.Above) is never
// warmed, since no job would read it here. A protected entry is never
// dropped, whatever its chance, so that a warm never costs a queued job its
// model. size gives a model's bytes; a model it does not know is skipped.
func PlanWarm(ranked []Score, size func(model string) (int64, bool), room Room, opts WarmOptions) Plan {
	if opts.MinP <= 0 {
		opts.MinP = 0.05
	}
	if opts.Margin <= 0 {
		opts.Margin = 2
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = room.Capacity / 4
	}
	chance := make(map[string]float64, len(ranked))
	for _, s := range ranked {
		chance[s.Model] = s.P
	}
	reload := func(m string, bytes int64) float64 {
		if room.ReloadCost != nil {
			return room.ReloadCost(m)
		}
		return float64(bytes)
	}
	held := map[string]bool{}
	free := room.Capacity - room.Reserved
	type victim struct {
		model string
		bytes int64
		worth float64
	}
	var evictable []victim
	for _, e := range room.Entries {
		held[e.Model] = true
		free -= e.Bytes
		if !e.Protected {
			evictable = append(evictable, victim{e.Model, e.Bytes, chance[e.Model] * reload(e.Model, e.Bytes)})
		}
	}
	perByte := func(v victim) float64 { return v.worth / float64(max(v.bytes, 1)) }
	sort.Slice(evictable, func(i, j int) bool {
		if a, b := perByte(evictable[i]), perByte(evictable[j]); a != b {
			return a < b
		}
		return evictable[i].model < evictable[j].model
	})
	var plan Plan
	for _, s := range ranked {
		if s.P < opts.MinP {
			break // ranked is most likely first
		}
		b, ok := size(s.Model)
		if held[s.Model] || room.Above[s.Model] || !ok || b <= 0 || b > room.Capacity || (len(plan.Warm) > 0 && plan.WarmBytes+b > opts.MaxBytes) {
			continue
		}
		worth := s.P * reload(s.Model, b)
		need := b - free
		k := 0
		var displaced float64
		for k < len(evictable) && need > 0 && (displaced+evictable[k].worth)*opts.Margin < worth {
			displaced += evictable[k].worth
			need -= evictable[k].bytes
			k++
		}
		if need > 0 {
			plan.Refused++
			continue // not enough room among entries worth less
		}
		for _, v := range evictable[:k] {
			plan.Evict = append(plan.Evict, v.model)
			free += v.bytes
		}
		evictable = evictable[k:]
		free -= b
		held[s.Model] = true
		plan.Warm = append(plan.Warm, s.Model)
		plan.WarmBytes += b
	}
	return plan
}
