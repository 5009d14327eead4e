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
