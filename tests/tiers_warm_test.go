package tests

import (
	"context"
	"errors"
	"testing"

	"github.com/kiln-gpu/kiln/internal/plugin"
	"github.com/kiln-gpu/kiln/internal/tier"
)

// TestTiersWarmNeverTakesAProtectedModel drives tier.Manager.Warm, the
// predictor's way into the RAM tier, over a real storage plugin: the
// models it is told queued jobs need stay in RAM whatever the warm needs
// (it fails for want of room rather than take them), the entries it is
// told to drop go, and the tier's own eviction makes the rest of the room
// among unprotected models only.
func TestTiersWarmNeverTakesAProtectedModel(t *testing.T) {
	const size = 1 << 20
	models, ids := tierModels(t, 5, size)
	r := newTierRig(t, models, tier.Config{
		Disk: tier.DiskConfig{CapacityBytes: 8 * size, TargetFill: 1},
		RAM:  tier.RAMConfig{CapacityBytes: 3 * size, TargetFill: 1},
	}, plugin.Config{})
	ctx := context.Background()
	inRAM := func(want ...bool) {
		t.Helper()
		for i, w := range want {
			if got := r.mgr.InRAM(ids[i]); got != w {
				t.Fatalf("model %d in RAM: %v, want %v (entries %+v)", i, got, w, r.mgr.RAMEntries())
			}
		}
	}
	for _, id := range ids[:3] {
		l, err := r.mgr.Acquire(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	inRAM(true, true, true, false, false)
	if got := r.mgr.RAMEntries(); len(got) != 3 || got[0].Model != ids[0] || got[0].Bytes != size || got[0].Pinned {
		t.Fatalf("RAMEntries = %+v", got)
	}

	// Every entry protected: no room for the warm, and nothing taken.
	if err := r.mgr.Warm(ctx, ids[3], nil, ids[:3]); !errors.Is(err, tier.ErrNoRoom) {
		t.Fatalf("Warm with every entry protected = %v; want ErrNoRoom", err)
	}
	inRAM(true, true, true, false)

	// The plan drops model 1 for model 3; 0 and 2 are protected.
	if err := r.mgr.Warm(ctx, ids[3], ids[1:2], []string{ids[0], ids[2]}); err != nil {
		t.Fatal(err)
	}
	inRAM(true, false, true, true)

	// Nothing to drop: the tier's LRU makes room, but not from model 3
	// (protected) even though model 0 is older — it picks 0 or 2.
	if err := r.mgr.Warm(ctx, ids[4], nil, ids[3:4]); err != nil {
		t.Fatal(err)
	}
	if !r.mgr.InRAM(ids[3]) || !r.mgr.InRAM(ids[4]) {
		t.Fatalf("after warming 4 with 3 protected: entries %+v", r.mgr.RAMEntries())
	}
	for _, e := range r.mgr.RAMEntries() {
		if e.Pinned {
			t.Fatalf("Warm left %s pinned", e.Model)
		}
	}
	// A protected model that is not in RAM is no obstacle, and an evict
	// list naming a model not there is ignored.
	if err := r.mgr.Warm(ctx, ids[1], []string{"checkpoints/none.bin"}, []string{"checkpoints/none.bin"}); err != nil {
		t.Fatal(err)
	}
	if !r.mgr.InRAM(ids[1]) {
		t.Fatal("model 1 not warmed")
	}
}
