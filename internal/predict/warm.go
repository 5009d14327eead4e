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
}

// WarmOptions bound a warming decision. Zero fields take the defaults.
type WarmOptions struct {
	// MinP is the least chance a model needs to be warmed (default 0.05).
	MinP float64
	// Margin is how much more likely a model must be than each model it
	// displaces (default 2): without it two models of equal chance would
	// displace each other on every call, moving bytes for nothing.
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
}

// PlanWarm decides which of the ranked models to bring into room, and which
// unprotected entries to drop for them: a model comes in when it fits in
// the free room or in the room of entries that are at least Margin times
// less likely to be asked for (their chance from ranked; 0 when unranked).
// A protected entry is never dropped, whatever its chance, so that a warm
// never costs a queued job its model. size gives a model's bytes; a model
// it does not know is skipped.
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
	held := map[string]bool{}
	free := room.Capacity - room.Reserved
	type victim struct {
		model string
		bytes int64
		p     float64
	}
	var evictable []victim
	for _, e := range room.Entries {
		held[e.Model] = true
		free -= e.Bytes
		if !e.Protected {
			evictable = append(evictable, victim{e.Model, e.Bytes, chance[e.Model]})
		}
	}
	sort.Slice(evictable, func(i, j int) bool {
		if evictable[i].p != evictable[j].p {
			return evictable[i].p < evictable[j].p
		}
		return evictable[i].model < evictable[j].model
	})
	var plan Plan
	for _, s := range ranked {
		if s.P < opts.MinP {
			break // ranked is most likely first
		}
		b, ok := size(s.Model)
		if held[s.Model] || !ok || b <= 0 || b > room.Capacity || (len(plan.Warm) > 0 && plan.WarmBytes+b > opts.MaxBytes) {
			continue
		}
		need := b - free
		k := 0
		for k < len(evictable) && need > 0 && evictable[k].p*opts.Margin < s.P {
			need -= evictable[k].bytes
			k++
		}
		if need > 0 {
			continue // not enough room among less likely models
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
