package predict

import (
	"slices"
	"testing"
)

func sizes(m map[string]int64) func(string) (int64, bool) {
	return func(id string) (int64, bool) { b, ok := m[id]; return b, ok }
}

func TestPlanWarmNeverDropsAProtectedEntry(t *testing.T) {
	ranked := []Score{{Model: "hot", P: 0.9}}
	room := Room{Capacity: 100, Entries: []Entry{
		{Model: "queued", Bytes: 60, Protected: true},
		{Model: "cold", Bytes: 30},
	}}
	// hot needs 50: free 10 + cold's 30 is 40; only the protected entry
	// would make room, so nothing is warmed.
	p := PlanWarm(ranked, sizes(map[string]int64{"hot": 50}), room, WarmOptions{MaxBytes: 100})
	if len(p.Warm) != 0 || slices.Contains(p.Evict, "queued") {
		t.Fatalf("plan %+v: warmed by dropping a queued job's model", p)
	}
	p = PlanWarm(ranked, sizes(map[string]int64{"hot": 40}), room, WarmOptions{MaxBytes: 100})
	if !slices.Equal(p.Warm, []string{"hot"}) || !slices.Equal(p.Evict, []string{"cold"}) {
		t.Fatalf("plan %+v; want hot in, cold out", p)
	}
}

func TestPlanWarmDisplacesOnlyMuchLessLikelyModels(t *testing.T) {
	ranked := []Score{{Model: "a", P: 0.3}, {Model: "b", P: 0.2}, {Model: "c", P: 0.05}}
	room := Room{Capacity: 100, Entries: []Entry{{Model: "b", Bytes: 50}, {Model: "c", Bytes: 50}}}
	p := PlanWarm(ranked, sizes(map[string]int64{"a": 50, "b": 50, "c": 50}), room, WarmOptions{MaxBytes: 100})
	// a (0.3) displaces c (0.05 × 2 < 0.3), not b (0.2 × 2 ≥ 0.3).
	if !slices.Equal(p.Warm, []string{"a"}) || !slices.Equal(p.Evict, []string{"c"}) {
		t.Fatalf("plan %+v; want a in, c out", p)
	}
	// Nothing beats what is held by the margin: no churn.
	ranked = []Score{{Model: "b", P: 0.3}, {Model: "c", P: 0.2}, {Model: "a", P: 0.25}}
	p = PlanWarm(ranked, sizes(map[string]int64{"a": 50, "b": 50, "c": 50}), room, WarmOptions{MaxBytes: 100})
	if len(p.Warm) != 0 || len(p.Evict) != 0 {
		t.Fatalf("plan %+v; want nothing moved", p)
	}
}

func TestPlanWarmBounds(t *testing.T) {
	ranked := []Score{{Model: "a", P: 0.5}, {Model: "b", P: 0.3}, {Model: "c", P: 0.01}, {Model: "big", P: 0.4}}
	sz := sizes(map[string]int64{"a": 10, "b": 10, "c": 10, "big": 1000})
	p := PlanWarm(ranked, sz, Room{Capacity: 100}, WarmOptions{MaxBytes: 15})
	if !slices.Equal(p.Warm, []string{"a"}) {
		t.Fatalf("plan %+v; want only a within 15 bytes", p)
	}
	p = PlanWarm(ranked, sz, Room{Capacity: 100}, WarmOptions{MaxBytes: 5})
	if !slices.Equal(p.Warm, []string{"a"}) {
		t.Fatalf("plan %+v; want a: the first model goes whatever MaxBytes", p)
	}
	p = PlanWarm(ranked, sz, Room{Capacity: 100, Reserved: 85}, WarmOptions{MaxBytes: 100})
	if !slices.Equal(p.Warm, []string{"a"}) {
		t.Fatalf("plan %+v; want only a in the 15 bytes left by transfers on their way", p)
	}
	p = PlanWarm(ranked, sz, Room{Capacity: 100}, WarmOptions{MaxBytes: 100})
	if !slices.Equal(p.Warm, []string{"a", "b"}) || p.WarmBytes != 20 {
		t.Fatalf("plan %+v; want a and b (c is below MinP, big exceeds the cache)", p)
	}
}

// TestPlanWarmGateWeighsWhatItDisplaces: a warm must be expected to save
// more than Margin times what all the entries it drops are expected to
// cost, together. Each victim alone is far less likely than the candidate;
// the three together are not, and the gate refuses.
func TestPlanWarmGateWeighsWhatItDisplaces(t *testing.T) {
	ranked := []Score{{Model: "new", P: 0.3}, {Model: "a", P: 0.06}, {Model: "b", P: 0.06}, {Model: "c", P: 0.06}}
	sz := sizes(map[string]int64{"new": 90, "a": 30, "b": 30, "c": 30})
	room := Room{Capacity: 90, Entries: []Entry{{Model: "a", Bytes: 30}, {Model: "b", Bytes: 30}, {Model: "c", Bytes: 30}}}
	// Worth (P × bytes): new 27; a+b+c 5.4, × 2 = 10.8 < 27: warmed.
	p := PlanWarm(ranked, sz, room, WarmOptions{MaxBytes: 100})
	if !slices.Equal(p.Warm, []string{"new"}) || len(p.Evict) != 3 || p.Refused != 0 {
		t.Fatalf("plan %+v; want new in, a b c out", p)
	}
	// With a margin of 6 the three together (6 × 5.4 = 32.4) outweigh
	// new's 27: nothing moves, and the refusal is counted.
	p = PlanWarm(ranked, sz, room, WarmOptions{MaxBytes: 100, Margin: 6})
	if len(p.Warm) != 0 || len(p.Evict) != 0 || p.Refused != 1 {
		t.Fatalf("plan %+v; want the gate to refuse new", p)
	}
	// A reload cost that makes the victims dear (a source read each)
	// refuses the warm at the default margin too, although each victim's
	// chance is a fifth of new's: the gate weighs load time, not chance.
	room.ReloadCost = func(m string) float64 {
		if m == "new" {
			return 90
		}
		return 300
	}
	p = PlanWarm(ranked, sz, room, WarmOptions{MaxBytes: 100})
	if len(p.Warm) != 0 || p.Refused != 1 {
		t.Fatalf("plan %+v; want the gate to refuse new against dear victims", p)
	}
}

// TestPlanWarmEvictsCheapestPerByte: victims go by expected reload cost
// per byte, so a large entry of the same chance goes before two small ones
// that together free less room.
func TestPlanWarmEvictsCheapestPerByte(t *testing.T) {
	ranked := []Score{{Model: "new", P: 0.5}, {Model: "small1", P: 0.1}, {Model: "small2", P: 0.1}, {Model: "big", P: 0.1}}
	sz := sizes(map[string]int64{"new": 40, "small1": 10, "small2": 10, "big": 40})
	room := Room{Capacity: 60, Entries: []Entry{{Model: "small1", Bytes: 10}, {Model: "small2", Bytes: 10}, {Model: "big", Bytes: 40}}}
	// Per byte all are 0.1 by bytes; make big cheaper to reload per byte.
	room.ReloadCost = func(m string) float64 {
		if m == "big" {
			return 20
		}
		b, _ := sz(m)
		return float64(b)
	}
	p := PlanWarm(ranked, sz, room, WarmOptions{MaxBytes: 100})
	if !slices.Equal(p.Warm, []string{"new"}) || !slices.Equal(p.Evict, []string{"big"}) {
		t.Fatalf("plan %+v; want new in, big (cheapest per byte) out", p)
	}
}

// TestPlanWarmSkipsWhatAFasterCacheHolds: a model in a worker's VRAM is
// served from there; warming it into RAM would be waste.
func TestPlanWarmSkipsWhatAFasterCacheHolds(t *testing.T) {
	ranked := []Score{{Model: "in-vram", P: 0.6}, {Model: "b", P: 0.3}}
	sz := sizes(map[string]int64{"in-vram": 10, "b": 10})
	p := PlanWarm(ranked, sz, Room{Capacity: 100, Above: map[string]bool{"in-vram": true}}, WarmOptions{})
	if !slices.Equal(p.Warm, []string{"b"}) {
		t.Fatalf("plan %+v; want only b (in-vram is in VRAM)", p)
	}
}
