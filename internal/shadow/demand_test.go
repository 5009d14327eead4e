package shadow

import (
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
)

// demandSeen is an LRU that keeps the recent demand of the entries it was
// last shown, by model.
type demandSeen struct {
	decision.Evictor
	seen map[string]float64
}

func (d *demandSeen) Victims(need uint64, entries []decision.EntryView) []int {
	for _, e := range entries {
		d.seen[e.Model] = e.RecentDemand
	}
	return d.Evictor.Victims(need, entries)
}

// TestGhostEntriesCarryRecentDemand: a candidate sees in its ghost entries
// the recent demand Sources.Demand gives (ABI 1.3), at the shadow's clock,
// as the live tiers' evictors do, so that "demand" is judged on what it
// would see live.
func TestGhostEntriesCarryRecentDemand(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	topo := Topology{Devices: []Device{{Name: "gpu0", VRAMBytes: 4 * gib}}, RAMBytes: 16 * gib, DiskBytes: 64 * gib}
	src := sources(Bandwidths{H2D: []float64{2 * gib}, RAM: gib, Disk: gib / 2})
	var asked []time.Time
	src.Demand = func(now time.Time, model string) float64 {
		asked = append(asked, now)
		return map[string]float64{"A": 3, "B": 1.5}[model]
	}
	rec := &demandSeen{Evictor: policy.Native().NewEvictor(), seen: map[string]float64{}}
	s, err := New([]Candidate{FromEvictor("rec", rec)}, topo, src, clk)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, m := range []string{"A", "B", "C"} {
		clk.Advance(time.Second)
		s.Access(0, []string{m})
	}
	// VRAM holds two 2 GiB models: C's load asks the candidate, over A and B.
	if rec.seen["A"] != 3 || rec.seen["B"] != 1.5 {
		t.Errorf("the candidate saw demand %v, want A 3 and B 1.5", rec.seen)
	}
	if len(asked) == 0 || !asked[len(asked)-1].Equal(clk.Now()) {
		t.Errorf("demand asked at %v, want the shadow's clock %v", asked, clk.Now())
	}
}
