package policy

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	leastloaded "github.com/kiln-gpu/kiln/policies/balancing/least-loaded"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// loop runs f b.N times and reports the process's CPU time per iteration
// beside the wall time: on a shared machine the wall time also counts the
// time spent waiting for a core, which other sessions decide.
func loop(b *testing.B, f func()) {
	b.Helper()
	b.ReportAllocs()
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	for b.Loop() {
		f()
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano()
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}

// settle waits for the pool's background warm-up, which would otherwise
// run during the measured loop.
func settle(b *testing.B, h *Host) {
	b.Helper()
	if err := h.WaitReady(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func benchViews(n int) ([]decision.JobView, []decision.WorkerView, []decision.EntryView) {
	now := time.Now()
	jobs := make([]decision.JobView, n)
	workers := make([]decision.WorkerView, n)
	entries := make([]decision.EntryView, n)
	for i := range n {
		m := fmt.Sprintf("checkpoints/m%d.safetensors", i%50)
		jobs[i] = decision.JobView{ID: fmt.Sprintf("j%d", i), Class: job.Class([]string{"batch", "interactive"}[i%2]), Seq: uint64(n - i),
			Age: time.Duration(i) * time.Second, Models: []string{m}, ModelBytes: []uint64{2 << 30}, EstimatedVRAM: 2 << 30}
		workers[i] = decision.WorkerView{ID: fmt.Sprintf("w%d", i), Device: i / 2, Idle: i%3 != 0, DeviceBusy: i % 3,
			Resident: []decision.ResidentModel{{Model: m, Bytes: 2 << 30}}, FreeVRAM: uint64(i) << 28, UsableVRAM: 80 << 30}
		entries[i] = decision.EntryView{Model: m, Worker: fmt.Sprintf("w%d", i%8), Bytes: 1 << 30, LastUse: now.Add(-time.Duration(i*7%n) * time.Second),
			Hits: i % 5, Pinned: i%4 == 0}
	}
	return jobs, workers, entries
}

// BenchmarkDecision measures one decision through the host's dispatch
// adapters (view conversion, snapshot encoding, the call, decoding and
// validation) for the WASM build and the native build of the same
// built-in; the native build is the baseline (the kernel holds no
// hand-written policy to compare with any more).
func BenchmarkDecision(b *testing.B) {
	for _, kind := range []struct {
		kind abi.Kind
		name string
	}{{abi.KindEviction, "lru"}, {abi.KindScheduling, "priority"}, {abi.KindBalancing, "least-loaded"}} {
		wasm := wasmOf(b, kind.kind.String()+"."+kind.name)
		for _, n := range []int{10, 100, 1000} {
			jobs, workers, entries := benchViews(n)
			run := loop
			targets := []string{"native", "wasm"}
			if kind.kind == abi.KindBalancing {
				targets = append(targets, "wasm-as") // resident-first: the same shape of decision
			}
			for _, target := range targets {
				b.Run(fmt.Sprintf("%s/%s/n=%d/%s", kind.kind, kind.name, n, target), func(b *testing.B) {
					h := newTestHost(b, Config{CallTimeout: time.Second})
					if target == "wasm" || target == "wasm-as" {
						m := wasm
						if target == "wasm-as" {
							m = asModule(b)
						}
						if _, err := h.Load(context.Background(), kind.kind, kind.name+"-"+target, m, true, "bench"); err != nil {
							b.Fatal(err)
						}
					} else if _, err := h.Activate(context.Background(), kind.kind, kind.name, 0, "bench"); err != nil {
						b.Fatal(err)
					}
					settle(b, h)
					switch kind.kind {
					case abi.KindEviction:
						e := decision.Evictor(h.Evictor())
						run(b, func() { e.Victims(uint64(n/4)<<30, entries) })
					case abi.KindScheduling:
						s := decision.Scheduler(h.Scheduler())
						run(b, func() { s.Next(jobs, workers[:min(n, 16)]) })
					case abi.KindBalancing:
						p := decision.Balancer(h.Balancer())
						run(b, func() { p.Place(jobs[0], workers) })
					}
					for _, ki := range h.List() {
						for _, v := range ki.Versions {
							if v.Faults > 0 {
								b.Fatalf("%s faulted %d times", v.Name, v.Faults)
							}
						}
					}
				})
			}
		}
	}
}

// BenchmarkRawCall measures the call alone on prepared balancing
// snapshots (deadline, buffer write, hook, answer read) for the Go build of
// least-loaded, the AssemblyScript example (a policy of the same shape
// that reads the snapshot in place) and, as the baseline, the Go build run
// natively through the same bytes (decode, policy, encode).
func BenchmarkRawCall(b *testing.B) {
	for _, n := range []int{0, 10, 100, 1000} {
		in := &abi.BalancingInput{Job: abi.Job{Models: []uint32{0}}, Models: []abi.ModelInfo{{Bytes: 1 << 30}}, Workers: make([]abi.Worker, n)}
		for i := range in.Workers {
			in.Workers[i] = abi.Worker{Idle: i%2 == 0, DeviceBusy: uint32(i % 3), FreeVRAM: uint64(i) << 28, Resident: []uint32{0}[:i%2]}
		}
		input := abi.AppendBalancingInput(nil, in)
		b.Run(fmt.Sprintf("n=%d/native", n), func(b *testing.B) {
			g, err := abi.NewGuest(leastloaded.New())
			if err != nil {
				b.Fatal(err)
			}
			loop(b, func() {
				buf := g.Buffer(len(input))
				copy(buf, input)
				g.Call(abi.KindBalancing, buf)
			})
		})
		for _, guest := range []string{"go", "as"} {
			b.Run(fmt.Sprintf("n=%d/wasm-%s", n, guest), func(b *testing.B) {
				h := newTestHost(b, Config{})
				wasm := asModule(b)
				if guest == "go" {
					wasm = wasmOf(b, "balancing.least-loaded")
				}
				if _, err := h.Load(context.Background(), abi.KindBalancing, guest, wasm, true, "bench"); err != nil {
					b.Fatal(err)
				}
				settle(b, h)
				m := h.slots[abi.KindBalancing].active.Load().mod
				ci := &callInfo{}
				var out []byte
				loop(b, func() {
					var err error
					if out, err = m.call(context.Background(), ci, input, out[:0]); err != nil {
						b.Fatal(err)
					}
				})
			})
		}
	}
}

// BenchmarkSwap measures load → compile → instantiate one instance →
// self-test → active, for a built-in Go module, with wazero's compilation
// cache warm. "again" loads a module this host loaded before (its own cache
// skips decoding and validation); "restarted" loads it into a host that
// restored it from its state dir; "new" is a module a fresh host has never
// seen: wazero decodes and validates every function before it finds the
// compiled code in its file cache.
func BenchmarkSwap(b *testing.B) {
	wasm := wasmOf(b, "scheduling.fifo")
	b.Run("again", func(b *testing.B) {
		h := newTestHost(b, Config{})
		if _, err := h.Load(context.Background(), abi.KindScheduling, "fifo", wasm, true, "warm the cache"); err != nil {
			b.Fatal(err)
		}
		settle(b, h)
		for b.Loop() {
			if _, err := h.Load(context.Background(), abi.KindScheduling, "fifo", wasm, true, "bench"); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			settle(b, h)
			// Keep the version list short: drop what this iteration added.
			h.mu.Lock()
			s := h.slots[abi.KindScheduling]
			for _, v := range s.versions[2:] {
				if v != s.active.Load() {
					v.close()
				}
			}
			s.versions = append(s.versions[:2], s.active.Load())
			s.previous = s.previous[:1]
			h.mu.Unlock()
			b.StartTimer()
		}
	})
	// "restarted": a node restarted with its data dir, which restores the
	// modules it kept (in the background, before it reports ready) and so
	// knows them again, as after any restart in production.
	b.Run("restarted", func(b *testing.B) {
		state := b.TempDir()
		cfg := Config{CacheDir: testCacheDir, StateDir: state, CallTimeout: time.Second}
		first, err := newHost(cfg, zerolog.Nop(), clock.Real(), fstest.MapFS{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := first.Load(context.Background(), abi.KindScheduling, "fifo", wasm, true, "keep"); err != nil {
			b.Fatal(err)
		}
		settle(b, first)
		first.Close()
		swapIntoFreshHosts(b, cfg, wasm)
	})
	b.Run("new", func(b *testing.B) {
		warm := newTestHost(b, Config{})
		if _, err := warm.Load(context.Background(), abi.KindScheduling, "fifo", wasm, true, "warm the file cache"); err != nil {
			b.Fatal(err)
		}
		swapIntoFreshHosts(b, Config{CacheDir: testCacheDir, CallTimeout: time.Second}, wasm)
	})
}

// swapIntoFreshHosts times, in each iteration, one load-and-activate of
// wasm into a new host made with cfg, once the host is ready (a host with
// a state dir restores it first).
func swapIntoFreshHosts(b *testing.B, cfg Config, wasm []byte) {
	for b.Loop() {
		b.StopTimer()
		h, err := newHost(cfg, zerolog.Nop(), clock.Real(), fstest.MapFS{})
		if err != nil {
			b.Fatal(err)
		}
		settle(b, h)
		// The hosts of earlier iterations are garbage (tens of MB of
		// compiled code each) that a node would not carry into a swap.
		runtime.GC()
		b.StartTimer()
		if _, err := h.Load(context.Background(), abi.KindScheduling, "fifo", wasm, true, "bench"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		h.Close()
		b.StartTimer()
	}
}

// BenchmarkInstanceMemory reports the memory one more pooled instance
// costs: Go heap (wazero's bookkeeping and the linear memory it allocates)
// and the guest's linear memory size.
func BenchmarkInstanceMemory(b *testing.B) {
	h := newTestHost(b, Config{})
	if _, err := h.Load(context.Background(), abi.KindBalancing, "ll", wasmOf(b, "balancing.least-loaded"), true, "bench"); err != nil {
		b.Fatal(err)
	}
	m := h.slots[abi.KindBalancing].active.Load().mod
	const n = 16
	var before, after runtime.MemStats
	var linear uint32
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&before)
		ins := make([]*instance, n)
		for i := range ins {
			var err error
			if ins[i], err = m.newInstance(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		linear = ins[0].mem.Size()
		for _, in := range ins {
			m.discard(in)
		}
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n/(1<<20), "heap-MiB/instance")
	b.ReportMetric(float64(linear)/(1<<20), "linear-MiB/instance")
}
