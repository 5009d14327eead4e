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
