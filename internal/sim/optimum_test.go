package sim

import (
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
)

// TestOptimumModelsTheRAMTier: two models used in turn (a b a b) on a
// device that holds one. With a RAM tier that holds both, every miss
// after the first uses is a RAM→GPU transfer; with a RAM tier that holds
// one, no clairvoyance saves the disk reads, and the optimum must charge
// them rather than assume an unbounded RAM tier.
func TestOptimumModelsTheRAMTier(t *testing.T) {
	models := []Model{{ID: "a", Bytes: 2e9, Family: "sd15"}, {ID: "b", Bytes: 2e9, Family: "sd15"}}
	var reqs []Request
	for i, m := range []string{"a", "b", "a", "b"} {
		reqs = append(reqs, Request{Time: time.Duration(i) * 100 * time.Second, Models: []string{m}, Class: job.Batch})
	}
	// As TestTinyTraceMatchesCostModel: host→device at 10e9 B/s plus 0.5 s,
	// disk at 1.7e9 B/s, source at 1e9 B/s.
	transfer := 0.5 + 2e9/10e9
	disk := 2e9/1.7e9 + transfer
	cold := 2.0 + disk
	for _, tc := range []struct {
		name     string
		ram      int64
		want     float64 // optimal_load_time_s
		wantVRAM float64 // optimal_vram_load_time_s
	}{
		{name: "ram holds both", ram: 16e9, want: 2*cold + 2*transfer, wantVRAM: 2*cold + 2*transfer},
		{name: "ram holds one", ram: 3e9, want: 2*cold + 2*disk, wantVRAM: 2*cold + 2*transfer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node(1, 1, 3.5e9, "lru")
			cfg.RAMBytes = tc.ram
			rep := run(t, cfg, models, reqs)
			if rep.Tiers["vram"].Misses != 4 {
				t.Fatalf("vram misses %d, want 4: the device must hold one model", rep.Tiers["vram"].Misses)
			}
			if !near(rep.OptimalLoadTimeS, tc.want) || !near(rep.OptimalVRAMLoadTimeS, tc.wantVRAM) {
				t.Errorf("optimum %v, VRAM-only optimum %v; want %v, %v", rep.OptimalLoadTimeS, rep.OptimalVRAMLoadTimeS, tc.want, tc.wantVRAM)
			}
			// LRU can do no better and no worse here.
			if !near(rep.TotalLoadTimeS, tc.want) || !near(rep.LoadTimeVsOptimum, 1) {
				t.Errorf("load time %v (%.3f× the optimum), want %v", rep.TotalLoadTimeS, rep.LoadTimeVsOptimum, tc.want)
			}
		})
	}
}

// TestOptimumRAMBelady: on a RAM tier that holds two of three models, the
// optimum keeps the one used soonest, where LRU drops it. Requests a b c a
// b c ... through a device that holds one model: LRU on RAM misses every
// time after the first three; farthest-next-use misses one in two.
func TestOptimumRAMBelady(t *testing.T) {
	s := &simulator{models: map[string]Model{"a": {Bytes: 2e9}, "b": {Bytes: 2e9}, "c": {Bytes: 2e9}}}
	ids := []string{"a", "b", "c", "a", "b", "c", "a", "b", "c"}
	hits := s.beladyHost(ids, 4e9)
	n := 0
	for _, h := range hits {
		if h {
			n++
		}
	}
	// Belady on a cyclic pattern of 3 over 2 slots: after the 3 cold
	// misses, it hits 3 of the remaining 6.
	if n != 3 || hits[0] || hits[1] || hits[2] {
		t.Errorf("hits %v (%d), want 3 after the cold misses", hits, n)
	}
	if got := s.beladyHost(ids, 1e9); got[3] || got[8] {
		t.Errorf("a tier smaller than a model hit: %v", got)
	}
}
