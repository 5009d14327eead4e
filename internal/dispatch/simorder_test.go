package dispatch_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/sim"
)

// TestSimulatorAndLiveAgreeOnDispatchOrder queues one small workload in a
// live dispatcher (real store, a real worker process) and in the simulator,
// with the same policies, and checks that jobs start in the same order. The
// workload mixes classes (the priority scheduler reorders) and repeats model
// sets (the same-model batcher groups them), so the order is not the
// submission order and a simulator that decided differently from the
// dispatcher's core would start them differently. Batches run back to back
// in both (the simulator's default, as live). With fifo and no batching the
// order must be the submission order across classes, live and simulated:
// the views carry arrival order, not an interactive-first one.
func TestSimulatorAndLiveAgreeOnDispatchOrder(t *testing.T) {
	const gib = 1 << 30
	a, b, c := "checkpoints/a.safetensors", "checkpoints/b.safetensors", "checkpoints/c.safetensors"
	sizes := map[string]int64{a: 6 * gib, b: 6 * gib, c: 2 * gib}
	classes := []job.Class{job.Batch, job.Batch, job.Interactive, job.Batch, job.Interactive, job.Batch, job.Batch, job.Interactive, job.Batch, job.Batch}
	sets := [][]string{{a}, {b}, {c}, {a}, {b}, {a}, {c}, {c}, {b}, {a}}
	var live []dispatch.LiveJob
	var reqs []sim.Request
	for i := range classes {
		live = append(live, dispatch.LiveJob{Class: classes[i], Models: sets[i]})
		reqs = append(reqs, sim.Request{Models: sets[i], Class: classes[i]})
	}
	var models []sim.Model
	for _, id := range []string{a, b, c} {
		models = append(models, sim.Model{ID: id, Bytes: sizes[id], Family: "sdxl"})
	}
	orders := map[string][]int{}
	for _, tc := range []struct {
		scheduling, batching string
		// submissionOrder: the start order must be the submission order.
		submissionOrder bool
	}{
		{scheduling: "priority", batching: "same-model"},
		{scheduling: "fifo", batching: "none", submissionOrder: true},
		{scheduling: "priority", batching: "none"},
	} {
		t.Run(tc.scheduling+"/"+tc.batching, func(t *testing.T) {
			pcfg := policy.Config{Scheduling: tc.scheduling, Batching: tc.batching, Eviction: "lru", Balancing: "least-loaded", NativeBuiltins: true}
			host, err := policy.NewHost(pcfg.WithDefaults(), zerolog.Nop(), clock.Real())
			if err != nil {
				t.Fatal(err)
			}
			defer host.Close()
			// 12 GiB at 20% headroom: one 6 GiB model at a time beside the
			// 3.7 GB of activations the simulator charges a job without a
			// workflow (its family's reference resolution); the live jobs
			// here have an empty graph and no activations.
			got := dispatch.RunLiveOrder(t, 12*gib, sizes, dispatch.Options{
				Scheduler: host.Scheduler(), Balancer: host.Balancer(), Evictor: host.Evictor(), Batcher: host.Batcher(),
			}, live)

			var want []int
			cfg := sim.Config{
				Devices:          []device.SimDeviceConfig{{Name: "sim-0", MemoryBytes: 12 * gib, H2DBytesPerS: 25e9, ComputeFactor: 1}},
				Headroom:         0.2,
				WorkersPerDevice: 1,
				Cost:             cost.Default(),
				Policies:         pcfg,
			}
			_, err = sim.Run(context.Background(), cfg, models, &sim.Trace{Requests: reqs},
				sim.Options{Wall: clock.NewFake(time.Unix(0, 0)), OnStart: func(i int, _ string) { want = append(want, i) }})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("start order: live %v, simulator %v", got, want)
			}
			// The workload must exercise the policies: only fifo may
			// start the jobs in submission order.
			if slices.IsSorted(want) != tc.submissionOrder {
				t.Fatalf("order %v: submission order is %v, want %v", want, slices.IsSorted(want), tc.submissionOrder)
			}
			orders[tc.scheduling+"/"+tc.batching] = want
			t.Logf("start order %v", want)
		})
	}
	if f, p := orders["fifo/none"], orders["priority/none"]; f != nil && p != nil && slices.Equal(f, p) {
		t.Errorf("fifo and priority start the jobs in the same order %v", f)
	}
}
