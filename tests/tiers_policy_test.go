package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/plugin"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/tier"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestTiersEvictThroughPolicyHost hands the disk and RAM tiers the policy
// host's evictors, as the node does, and checks that the active eviction
// policy decides their evictions; that a policy which traps on every call
// is answered for by the native LRU, so the tiers keep serving, with each
// fault counted.
func TestTiersEvictThroughPolicyHost(t *testing.T) {
	const size = 1 << 20
	models, ids := tierModels(t, 5, size)
	cfg := tier.Config{
		Disk: tier.DiskConfig{CapacityBytes: 3 * size, TargetFill: 1},
		RAM:  tier.RAMConfig{CapacityBytes: 2 * size, TargetFill: 1},
	}
	h, err := policy.NewHost(policy.Config{NativeBuiltins: true, MaxFaults: 1000, CacheDir: t.TempDir()}, zerolog.Nop(), clock.Real())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	r := newTierRig(t, models, cfg, plugin.Config{}, h.NewEvictor(), h.NewEvictor())

	cycle := func() {
		t.Helper()
		for _, id := range ids {
			l, err := r.mgr.Acquire(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			checkLease(t, l, filepath.Join(models, id))
			l.Release()
		}
	}
	eviction := func() policy.KindInfo {
		for _, ki := range h.List() {
			if ki.Kind == "eviction" {
				return ki
			}
		}
		t.Fatal("no eviction kind")
		return policy.KindInfo{}
	}
	version := func(ki policy.KindInfo, name string) policy.VersionInfo {
		for _, v := range ki.Versions {
			if v.Name == name {
				return v
			}
		}
		t.Fatalf("no version %s in %+v", name, ki.Versions)
		return policy.VersionInfo{}
	}

	cycle()
	evictions := tierStat(r.mgr, "disk").Evictions + tierStat(r.mgr, "ram").Evictions
	if evictions == 0 {
		t.Fatal("no evictions; the test needs some")
	}
	if calls := version(eviction(), "lru").Calls; calls == 0 {
		t.Fatalf("the active eviction policy was asked %d times for %d evictions", calls, evictions)
	}

	wasm := filepath.Join(t.TempDir(), "hostile.wasm")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", wasm, "../internal/policy/testdata/hostile")
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hostile module: %v\n%s", err, out)
	}
	module, err := os.ReadFile(wasm)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := h.Load(ctx, abi.KindEviction, "hostile", module, true, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetParam(abi.KindEviction, "mode", 3); err != nil { // panic on every call
		t.Fatal(err)
	}
	before := tierStat(r.mgr, "disk").Evictions + tierStat(r.mgr, "ram").Evictions
	cycle() // every lease still verifies: LRU answered for the module
	after := tierStat(r.mgr, "disk").Evictions + tierStat(r.mgr, "ram").Evictions
	if after == before {
		t.Fatal("no evictions while the hostile policy was active")
	}
	if f := version(eviction(), "hostile").Faults; f == 0 {
		t.Errorf("hostile eviction policy: %d faults counted, want one per tier eviction", f)
	}
}

// TestTierHoldsAShortEvictionAnswerToTheNeed gives the RAM tier an eviction
// policy (the hostile module, mode 11) that names one victim whatever the
// need: a valid answer that frees too little. The tier first asks for room
// down to its target fill, which the unpinned entries cannot reach (one
// entry is pinned), so the short answer is no stall there; the tier must
// then ask for exactly what the new entry still lacks, where the unpinned
// entries do cover it, so that the policy host counts the short answer as
// a stall and the native policy makes the room. Before, the tier took the
// first short answer and refused the model (ErrNoRoom) with room to spare.
func TestTierHoldsAShortEvictionAnswerToTheNeed(t *testing.T) {
	const unit = 1 << 20
	models, ids := tierModels(t, 4, unit) // ma..md: one unit each
	big := "checkpoints/big.bin"
	b := make([]byte, 3*unit)
	for i := range b {
		b[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(models, filepath.FromSlash(big)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := tier.Config{
		Disk: tier.DiskConfig{CapacityBytes: 20 * unit, TargetFill: 1},
		RAM:  tier.RAMConfig{CapacityBytes: 4 * unit, TargetFill: 0.25},
	}
	h, err := policy.NewHost(policy.Config{NativeBuiltins: true, MaxFaults: 1000, CacheDir: t.TempDir()}, zerolog.Nop(), clock.Real())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := h.Load(ctx, abi.KindEviction, "hostile", buildPolicy(t, "../internal/policy/testdata/hostile"), true, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetParam(abi.KindEviction, "mode", 11); err != nil { // one victim, whatever the need
		t.Fatal(err)
	}
	r := newTierRig(t, models, cfg, plugin.Config{}, h.NewEvictor(), h.NewEvictor())

	pinned, err := r.mgr.Acquire(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Release()
	for _, id := range ids[1:] { // RAM full: one pinned unit, three unpinned
		l, err := r.mgr.Acquire(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	// Three units: the target (one unit left used) needs six freed, three
	// are unpinned; once the first victim is gone, two more are needed and
	// two are unpinned.
	l, err := r.mgr.Acquire(ctx, big)
	if err != nil {
		t.Fatalf("acquire a 3-unit model with 3 units unpinned under a short-answering policy: %v", err)
	}
	checkLease(t, l, filepath.Join(models, big))
	l.Release()
	var stalls int64
	for _, ki := range h.List() {
		for _, v := range ki.Versions {
			if ki.Kind == "eviction" && v.Name == "hostile" {
				stalls = v.FaultsBy[policy.FaultStall]
			}
		}
	}
	if stalls == 0 {
		t.Error("no stall fault counted for the answer that freed too little")
	}
}
