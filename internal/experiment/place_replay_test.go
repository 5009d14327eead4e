package experiment

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/stats"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestPlacementReplayGatesBalancing drives balancing canaries through the
// router alone — placements, no finished jobs, so the live metrics never
// have data — on a node whose eight idle workers each hold one of four
// models. Affinity places every job where its model is (price 0);
// round-robin turns through the workers and loads the model three times
// in four. The placement replay alone must roll round-robin back, and
// must leave an A/A canary of affinity running, its series all zeros.
func TestPlacementReplayGatesBalancing(t *testing.T) {
	for _, tc := range []struct {
		cand       string
		rolledBack bool
	}{{"round-robin", true}, {"affinity", false}} {
		t.Run(tc.cand, func(t *testing.T) {
			d := newDriver(t, defaultWorkload(), 10, "priority", testConfig(), "")
			rec := d.start(Spec{Kind: "balancing", Policy: tc.cand, Baseline: "affinity", Type: Canary, Unit: Traffic})
			models := []string{"checkpoints/a", "checkpoints/b", "checkpoints/c", "checkpoints/d"}
			var ws []decision.WorkerView
			for i := range 8 {
				ws = append(ws, decision.WorkerView{ID: fmt.Sprintf("w%d", i), Device: i / 2, Idle: true,
					Resident: []decision.ResidentModel{{Model: models[i%4], Bytes: 4 << 30}},
					FreeVRAM: 60 << 30, UsableVRAM: 64 << 30, H2DBytesPerS: 2 << 30})
			}
			for i := range 90 * 30 { // a job every 2 s for 90 minutes
				d.clk.Advance(2 * time.Second)
				m := models[(i*7)%4]
				j := decision.JobView{ID: fmt.Sprintf("j%05d", i), Class: job.Batch, Models: []string{m},
					ModelBytes: []uint64{4 << 30}, LoadCost: []time.Duration{2 * time.Second},
					EstimatedVRAM: 4 << 30, EstimatedCost: time.Second}
				if _, ok := d.router.Place(j, ws); !ok {
					t.Fatalf("job %d not placed", i)
				}
				d.ctl.Tick()
			}
			got, err := d.ctl.Get(rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			var cmp *Comparison
			if got.Report != nil {
				for i, c := range got.Report.Comparisons {
					if c.Metric == placeReplayMetric {
						cmp = &got.Report.Comparisons[i]
					}
				}
			}
			if tc.rolledBack {
				if got.State != RolledBack || !strings.Contains(got.Reason, placeReplayMetric) {
					t.Fatalf("round-robin against affinity: %s (%s), want rolled back by %s", got.State, got.Reason, placeReplayMetric)
				}
				t.Logf("round-robin: %s after %s: %s", got.State, got.EndedAt.Sub(got.StartedAt), got.Reason)
				return
			}
			if got.State == RolledBack {
				t.Fatalf("A/A affinity: rolled back (%s)", got.Reason)
			}
			if cmp == nil || cmp.Verdict == stats.Worse || cmp.Effect != 0 {
				t.Fatalf("A/A affinity: placement replay %+v, want present, zero effect, not worse", cmp)
			}
		})
	}
}

// TestPlacementPrice prices one job's placement on each worker of a view:
// the wait, each missing model at its load cost (or bytes over the
// bandwidth where the view has no cost), a reload of the bytes the loads
// push out of the device, and, where a running job holds the room, the
// wait until it lets go.
func TestPlacementPrice(t *testing.T) {
	const gib = 1 << 30
	j := decision.JobView{Models: []string{"ckpt", "lora"}, ModelBytes: []uint64{6 * gib, 1 * gib},
		LoadCost: []time.Duration{3 * time.Second, 0}}
	ws := []decision.WorkerView{
		{ID: "warm", Device: 0, Idle: true, Resident: []decision.ResidentModel{{Model: "ckpt", Bytes: 6 * gib}, {Model: "lora", Bytes: gib}}, FreeVRAM: 0, H2DBytesPerS: gib},
		{ID: "busy", Device: 1, Resident: []decision.ResidentModel{{Model: "ckpt", Bytes: 6 * gib}}, EstimatedWait: 5 * time.Second, FreeVRAM: 10 * gib, H2DBytesPerS: gib},
		{ID: "cold", Device: 2, Idle: true, FreeVRAM: 20 * gib, H2DBytesPerS: gib},
		// Device 3: its other worker is idle and holds 8 GiB, which can
		// be evicted now.
		{ID: "full", Device: 3, Idle: true, FreeVRAM: 2 * gib, H2DBytesPerS: gib},
		{ID: "full-peer", Device: 3, Idle: true, Resident: []decision.ResidentModel{{Model: "sdxl", Bytes: 8 * gib}}, FreeVRAM: 2 * gib, H2DBytesPerS: gib},
		// Device 4: its other worker runs a job that holds the room.
		{ID: "crowded", Device: 4, Idle: true, FreeVRAM: 2 * gib, H2DBytesPerS: gib},
		{ID: "crowded-peer", Device: 4, Resident: []decision.ResidentModel{{Model: "flux", Bytes: 20 * gib}}, EstimatedWait: 8 * time.Second, FreeVRAM: 2 * gib, H2DBytesPerS: gib},
	}
	for _, tc := range []struct {
		id   string
		want time.Duration
	}{
		{"warm", 0},
		{"busy", 5*time.Second + time.Second},                     // wait, then the LoRA over 1 GiB/s
		{"cold", 3*time.Second + time.Second},                     // the checkpoint at its cost, the LoRA by bandwidth
		{"full", 3*time.Second + time.Second + 5*time.Second},     // and the 5 GiB beyond free VRAM pushed out, reloaded once
		{"crowded", 3*time.Second + time.Second + 13*time.Second}, // as full, and the wait for the peer's job to let go
	} {
		if got, ok := placementPrice(&j, ws, tc.id); !ok || got != tc.want {
			t.Errorf("%s: %v %v, want %v", tc.id, got, ok, tc.want)
		}
	}
	if _, ok := placementPrice(&j, ws, "gone"); ok {
		t.Error("a worker not in the view was priced")
	}
}

// TestRouterReplaysAWatchedBalancingChange is the watch's replay of a
// balancing change made by hand (round-robin activated in place of
// affinity): with no experiment running, every placement the active
// policy makes is priced against the old policy's answer to the same
// question, until the watch closes the replay.
func TestRouterReplaysAWatchedBalancingChange(t *testing.T) {
	h, err := policy.NewHost(policy.Config{NativeBuiltins: true, Balancing: "round-robin"}, zerolog.Nop(), clock.NewFake(epoch))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	rt := NewRouter(Policies{Scheduler: h.Scheduler(), Balancer: h.Balancer(), Batcher: h.Batcher(), Evictor: h.Evictor()})
	sched, err := h.ActiveArm(abi.KindScheduling)
	if err != nil {
		t.Fatal(err)
	}
	if r := rt.ReplayChange(WatchedChange{Kind: "scheduling", Action: "activate", From: "priority@1", To: "fifo@1", FromArm: sched}); r != nil {
		t.Fatal("a scheduling change was replayed")
	}
	if r := rt.ReplayChange(WatchedChange{Kind: "balancing", Action: "activate", From: "affinity@1", To: "round-robin@1"}); r != nil {
		t.Fatal("a balancing change without the old version's arm was replayed")
	}
	from, err := h.Arm(context.Background(), abi.KindBalancing, "affinity", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rt.ReplayChange(WatchedChange{Kind: "balancing", Action: "activate", From: "affinity@1", To: "round-robin@1", FromArm: from})
	if r == nil {
		t.Fatal("the balancing change was not replayed")
	}
	models := []string{"checkpoints/a", "checkpoints/b", "checkpoints/c", "checkpoints/d"}
	var ws []decision.WorkerView
	for i := range 8 {
		ws = append(ws, decision.WorkerView{ID: fmt.Sprintf("w%d", i), Device: i / 2, Idle: true,
			Resident: []decision.ResidentModel{{Model: models[i%4], Bytes: 4 << 30}}, FreeVRAM: 60 << 30, UsableVRAM: 64 << 30, H2DBytesPerS: 2 << 30})
	}
	place := func(n int) {
		for i := range n {
			j := decision.JobView{ID: fmt.Sprintf("j%d", i), Class: job.Batch, Models: []string{models[i%4]},
				ModelBytes: []uint64{4 << 30}, LoadCost: []time.Duration{2 * time.Second}, EstimatedVRAM: 4 << 30}
			if _, ok := rt.Place(j, ws); !ok {
				t.Fatalf("job %d not placed", i)
			}
		}
	}
	place(40)
	old, cur := r.LoadTimes()
	if old != 0 || cur < 40*time.Second {
		t.Fatalf("after 40 placements: affinity (old) charged %v, round-robin (new) %v; want 0 and most of 40 loads of 2 s", old, cur)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	place(40)
	if o, c := r.LoadTimes(); o != old || c != cur {
		t.Fatalf("closed replay still fed: %v, %v", o, c)
	}
}
