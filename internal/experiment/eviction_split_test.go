package experiment

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
	"github.com/rs/zerolog"
)

// evictionArms is a host whose active eviction policy is lru, and arms of
// s3fifo (baseline) and gdsf (candidate): three versions, so that each
// one's call counter says who was asked.
func evictionArms(t *testing.T) (*policy.Host, [2]*policy.Arm, func() [3]int64) {
	t.Helper()
	h, err := policy.NewHost(policy.Config{NativeBuiltins: true, Eviction: "lru"}, zerolog.Nop(), clock.NewFake(epoch))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx := context.Background()
	base, err := h.Arm(ctx, abi.KindEviction, "s3fifo", 0)
	if err != nil {
		t.Fatal(err)
	}
	cand, err := h.Arm(ctx, abi.KindEviction, "gdsf", 0)
	if err != nil {
		t.Fatal(err)
	}
	active, err := h.ActiveArm(abi.KindEviction)
	if err != nil {
		t.Fatal(err)
	}
	calls := func() [3]int64 { return [3]int64{base.Calls(), cand.Calls(), active.Calls()} }
	return h, [2]*policy.Arm{base, cand}, calls
}

// entriesOn is one device's VRAM as the dispatcher lists it: a model per
// worker, unpinned.
func entriesOn(workers ...string) []decision.EntryView {
	var out []decision.EntryView
	for i, w := range workers {
		out = append(out, decision.EntryView{Model: "m" + w, Worker: w, Bytes: 1 << 30,
			LastUse: epoch.Add(time.Duration(i) * time.Second), Hits: 1})
	}
	return out
}

// TestEvictionSplitAsksEachDevicesArm checks the eviction experiment by
// devices: a device's VRAM is evicted by the policy of the arm that holds
// the device, production devices and empty devices by the active policy,
// and the host tiers by the active policy until the candidate has the
// whole node (a canary's 100% step), when they are the candidate's too.
func TestEvictionSplitAsksEachDevicesArm(t *testing.T) {
	h, arms, calls := evictionArms(t)
	rt := NewRouter(Policies{Evictor: h.Evictor()})
	ram := rt.HostTier(h.NewEvictor())
	r := &routing{kind: abi.KindEviction, typ: Canary, unit: Workers, arms: arms, now: func() time.Time { return epoch },
		group:  map[string]int{"d0-a": Candidate, "d0-b": Candidate, "d1-a": Baseline, "d1-b": Baseline, "d2-a": Production, "d2-b": Production},
		shares: [3]float64{1.0 / 3, 1.0 / 3, 1.0 / 3}}
	rt.set(r)

	asked := func(name string, f func()) [3]int64 {
		t.Helper()
		before := calls()
		f()
		after := calls()
		return [3]int64{after[0] - before[0], after[1] - before[1], after[2] - before[2]}
	}
	for _, tc := range []struct {
		name    string
		entries []decision.EntryView
		want    [3]int64 // baseline, candidate, active
	}{
		{"candidate's device", entriesOn("d0-a", "d0-b"), [3]int64{0, 1, 0}},
		{"baseline's device", entriesOn("d1-b", "d1-a"), [3]int64{1, 0, 0}},
		{"production device", entriesOn("d2-a"), [3]int64{0, 0, 1}},
		{"a worker the split never saw", entriesOn("d9-a"), [3]int64{0, 0, 1}},
	} {
		if got := asked(tc.name, func() { rt.Victims(1<<30, tc.entries) }); got != tc.want {
			t.Errorf("%s: calls (baseline, candidate, active) %v, want %v", tc.name, got, tc.want)
		}
	}
	tier := []decision.EntryView{{Model: "x", Worker: "ram", Bytes: 1 << 30}, {Model: "y", Worker: "ram", Bytes: 1 << 30}}
	if got := asked("ram below 100%", func() { ram.Victims(1<<30, tier) }); got != [3]int64{0, 0, 1} {
		t.Errorf("RAM tier during a device split: calls %v, want the active policy's only", got)
	}
	if got := asked("prefetch below 100%", func() { rt.PrefetchIDs(0, tier, []string{"z"}, []uint64{1}, []int{1}) }); got[0]+got[1] != 0 {
		t.Errorf("prefetch during a device split asked the arms: %v", got)
	}

	// The 100% step: every device is the candidate's, and so are the
	// tiers and the prefetches.
	rt.set(&routing{kind: abi.KindEviction, typ: Canary, unit: Workers, arms: arms, now: r.now,
		group: map[string]int{"d0-a": Candidate, "d1-a": Candidate, "d2-a": Candidate}, shares: [3]float64{0, 1, 0}})
	if got := asked("ram at 100%", func() { ram.Victims(1<<30, tier) }); got != [3]int64{0, 1, 0} {
		t.Errorf("RAM tier at the 100%% step: calls %v, want the candidate's", got)
	}
	if got := asked("prefetch at 100%", func() { rt.PrefetchIDs(0, tier, []string{"z"}, []uint64{1}, []int{1}) }); got != [3]int64{0, 1, 0} {
		t.Errorf("prefetch at the 100%% step: calls %v, want the candidate's", got)
	}

	// A switchback hands the tiers to the window's arm, as it does the
	// devices.
	sb := &routing{kind: abi.KindEviction, typ: Switchback, unit: Windows, arms: arms, start: epoch, window: time.Minute,
		windows: []int{Candidate, Baseline}, now: func() time.Time { return epoch.Add(90 * time.Second) }}
	rt.set(sb)
	if got := asked("ram in a baseline window", func() { ram.Victims(1<<30, tier) }); got != [3]int64{1, 0, 0} {
		t.Errorf("RAM tier in a switchback's baseline window: calls %v, want the baseline's", got)
	}
	if got := asked("vram in a baseline window", func() { rt.Victims(1<<30, entriesOn("d0-a")) }); got != [3]int64{1, 0, 0} {
		t.Errorf("VRAM in a switchback's baseline window: calls %v, want the baseline's", got)
	}

	rt.set(nil)
	if got := asked("ram without an experiment", func() { ram.Victims(1<<30, tier) }); got != [3]int64{0, 0, 1} {
		t.Errorf("RAM tier without an experiment: calls %v, want the active policy's", got)
	}
}
