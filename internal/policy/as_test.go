package policy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kiln-gpu/kiln/internal/decision"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

var (
	asOnce sync.Once
	asWasm []byte
	asErr  string
)

// asModule builds examples/policy-as with its pinned AssemblyScript
// compiler, or skips when node or the npm packages are missing (.ci/run
// installs them with `npm ci --prefix examples/policy-as`).
func asModule(t testing.TB) []byte {
	t.Helper()
	asOnce.Do(func() {
		dir := filepath.Join(repoRoot(), "examples", "policy-as")
		node, err := exec.LookPath("node")
		if err != nil {
			asErr = "node is not installed; the AssemblyScript example cannot be built"
			return
		}
		asc := filepath.Join(dir, "node_modules", "assemblyscript", "bin", "asc.js")
		if _, err := os.Stat(asc); err != nil {
			asErr = "AssemblyScript is not installed; run `npm ci --prefix examples/policy-as`"
			return
		}
		out := filepath.Join(os.TempDir(), "kiln-policy-as-test.wasm")
		cmd := exec.Command(node, asc, "assembly/index.ts", "--runtime", "stub", "--optimize", "--noAssert", "--outFile", out)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			asErr = "asc failed: " + err.Error() + "\n" + string(b)
			return
		}
		asWasm, err = os.ReadFile(out)
		if err != nil {
			asErr = err.Error()
		}
	})
	if asWasm == nil {
		t.Skip(asErr)
	}
	return asWasm
}

func TestAssemblyScriptExample(t *testing.T) {
	wasm := asModule(t)
	h := newTestHost(t, Config{})
	vi, err := h.Load(context.Background(), abi.KindBalancing, "resident-first", wasm, true, "test")
	if err != nil {
		t.Fatal(err)
	}
	if vi.Params["min_free_gib"] != 0 {
		t.Errorf("params %v, want min_free_gib 0", vi.Params)
	}
	const gib = 1 << 30
	j := decision.JobView{ID: "j", Models: []string{"a", "b"}, ModelBytes: []uint64{2 * gib, 6 * gib}, EstimatedVRAM: 8 * gib}
	for _, tc := range []struct {
		name    string
		minFree float64
		workers []decision.WorkerView
		want    string
		wantOK  bool
	}{
		{name: "most resident bytes", workers: []decision.WorkerView{
			{ID: "w0", Idle: true, Resident: []decision.ResidentModel{{Model: "a", Bytes: 2 * gib}}},
			{ID: "w1", Idle: true, Resident: []decision.ResidentModel{{Model: "b", Bytes: 6 * gib}}},
			{ID: "w2", Idle: false, Resident: []decision.ResidentModel{{Model: "a", Bytes: 2 * gib}, {Model: "b", Bytes: 6 * gib}}},
		}, want: "w1", wantOK: true},
		{name: "fewer busy breaks ties", workers: []decision.WorkerView{
			{ID: "w0", Idle: true, DeviceBusy: 2}, {ID: "w1", Idle: true, DeviceBusy: 1},
		}, want: "w1", wantOK: true},
		{name: "too small", workers: []decision.WorkerView{{ID: "w0", Idle: true, UsableVRAM: 4 * gib}}},
		{name: "min free parameter", minFree: 10, workers: []decision.WorkerView{
			{ID: "w0", Idle: true, FreeVRAM: 4 * gib}, {ID: "w1", Idle: true, FreeVRAM: 12 * gib},
		}, want: "w1", wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := h.SetParam(abi.KindBalancing, "min_free_gib", tc.minFree); err != nil {
				t.Fatal(err)
			}
			got, ok := h.Balancer().Place(j, tc.workers)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Place = %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
	if f := h.slots[abi.KindBalancing].active.Load().faults.Load(); f != 0 {
		t.Errorf("%d faults", f)
	}
}

// TestGuestMemoryStaysFlat makes many decisions on one instance of each
// guest language and checks that its linear memory does not grow: a guest
// that allocates per call (the AssemblyScript stub runtime never frees; a
// Go guest that never yields never collects) would reach the memory cap and
// trap after enough decisions.
func TestGuestMemoryStaysFlat(t *testing.T) {
	for _, guest := range []string{"as", "go"} {
		t.Run(guest, func(t *testing.T) {
			var wasm []byte
			if guest == "as" {
				wasm = asModule(t)
			} else {
				wasm = wasmOf(t, "balancing.least-loaded")
			}
			h := newTestHost(t, Config{PoolSize: 1})
			if _, err := h.Load(context.Background(), abi.KindBalancing, guest, wasm, true, "test"); err != nil {
				t.Fatal(err)
			}
			m := h.slots[abi.KindBalancing].active.Load().mod
			in := &abi.BalancingInput{Workers: make([]abi.Worker, 100)}
			for i := range in.Workers {
				in.Workers[i] = abi.Worker{Idle: true, DeviceBusy: uint32(i % 3)}
			}
			input := abi.AppendBalancingInput(nil, in)
			warm := memoryAfter(t, m, input, 200)
			if after := memoryAfter(t, m, input, 3000); after > warm {
				t.Errorf("linear memory grew from %d to %d bytes over 3000 decisions", warm, after)
			}
		})
	}
}

// TestGoGuestGarbageIsCollected runs a Go guest that allocates and drops
// 256 KiB on every decision, 4,000 times (1 GiB in all): its linear memory
// must stay bounded. A Go reactor's garbage collector only makes progress
// when the guest yields to the Go scheduler, which the SDK's exports do;
// without that the heap grows until the memory cap.
func TestGoGuestGarbageIsCollected(t *testing.T) {
	h := newTestHost(t, Config{MemoryLimitMiB: 256})
	if _, err := h.Load(context.Background(), abi.KindBalancing, "hostile", wasmOf(t, "hostile"), true, "test"); err != nil {
		t.Fatal(err)
	}
	m := h.slots[abi.KindBalancing].active.Load().mod
	// The snapshot carries the parameter: mode 7 drops 256 KiB a call.
	in := &abi.BalancingInput{Workers: []abi.Worker{{Idle: true}}, Common: abi.Common{Params: []float64{7}}}
	size := memoryAfter(t, m, abi.AppendBalancingInput(nil, in), 4000)
	t.Logf("linear memory after 4,000 decisions: %d MiB", size>>20)
	if size > 32<<20 {
		t.Errorf("linear memory is %d MiB after 4,000 decisions that each dropped 256 KiB", size>>20)
	}
}

// memoryAfter makes n decisions on input through m's pool and returns the
// linear memory size of the instance that made them (the pool hands out
// the one used last first).
func memoryAfter(t *testing.T, m *module, input []byte, n int) uint32 {
	t.Helper()
	var out []byte
	for range n {
		var err error
		if out, err = m.call(context.Background(), &callInfo{}, input, out[:0]); err != nil {
			t.Fatal(err)
		}
	}
	inst := m.pool.take()
	if inst == nil {
		t.Fatal("the calls left no instance in the pool")
	}
	defer m.put(inst)
	return inst.mem.Size()
}
