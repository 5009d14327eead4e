package sim

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// viewModels are two models that differ in every way a view shows.
var viewModels = []Model{{ID: "a", Bytes: 2e9, Family: "sd15"}, {ID: "b", Bytes: 6e9, Family: "sdxl"}}

// viewSim builds a simulator over reqs without running it, so that a test
// can put it in a state by hand and read the views its decisions get.
func viewSim(t *testing.T, cfg Config, reqs []Request) *simulator {
	t.Helper()
	cfg = cfg.withDefaults()
	s, err := newSimulator(context.Background(), cfg, viewModels, &Trace{Requests: reqs}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.host.Close() })
	return s
}

// viewNode is two devices of two workers each; the variant changes the
// second device's memory and bandwidth.
func viewNode(variant int) Config {
	c := node(2, 2, 24e9, "lru")
	if variant == 1 {
		c.Devices[1].MemoryBytes, c.Devices[1].H2DBytesPerS = 16e9, 10e9
	}
	return c
}

func req(model string, class job.Class) Request {
	return Request{Models: []string{model}, Class: class}
}

func queuedView(t *testing.T, s *simulator, i int) decision.JobView {
	t.Helper()
	for _, v := range s.queuedViews(DefaultQueueView) {
		if v.ID == s.jobs[i].id {
			return v
		}
	}
	t.Fatalf("job %d is not in the queue's view", i)
	return decision.JobView{}
}

func workerView(t *testing.T, s *simulator, id string) decision.WorkerView {
	t.Helper()
	for _, v := range s.workerViews() {
		if v.ID == id {
			return v
		}
	}
	t.Fatalf("no worker %s", id)
	return decision.WorkerView{}
}

// startOn starts trace job i alone on worker id.
func startOn(s *simulator, i int, id string) { s.start([]*simJob{s.jobs[i]}, s.byID[id]) }

// TestViewsTellTheTruth builds, for every field of every view a policy
// gets (queued and running jobs, workers, VRAM entries, host-tier
// entries), two situations that differ in that field, through the code
// that builds the views for the decisions, and checks that the field
// differs between them (and has its true value where one is given). A
// field the simulator zeroed or filled with a constant fails here, since
// a policy that read it could then not decide differently.
func TestViewsTellTheTruth(t *testing.T) {
	steps := func(n int) []workflow.SamplerParams {
		return []workflow.SamplerParams{{Steps: n, Width: 512, Height: 512, BatchSize: 1}}
	}
	for _, tc := range []struct {
		name string
		// read builds situation v (0 or 1) and returns the field.
		read func(t *testing.T, v int) any
		want [2]any // nil: only "differs" is checked
	}{
		// Queued jobs.
		{name: "job/Class", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", []job.Class{job.Batch, job.Interactive}[v])})
			s.enqueue(s.jobs[0])
			return queuedView(t, s, 0).Class
		}, want: [2]any{job.Batch, job.Interactive}},
		{name: "job/Seq across classes", read: func(t *testing.T, v int) any {
			// The interactive job arrives second, or first: its place
			// is its arrival, not its class.
			reqs := []Request{req("a", job.Batch), req("a", job.Interactive)}
			if v == 1 {
				reqs[0], reqs[1] = reqs[1], reqs[0]
			}
			s := viewSim(t, viewNode(0), reqs)
			s.enqueue(s.jobs[0])
			s.enqueue(s.jobs[1])
			return queuedView(t, s, 1-v).Seq
		}, want: [2]any{uint64(2), uint64(1)}},
		{name: "job/Age", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			s.enqueue(s.jobs[0])
			s.advance(time.Duration(v) * 10 * time.Second)
			return queuedView(t, s, 0).Age
		}, want: [2]any{time.Duration(0), 10 * time.Second}},
		{name: "job/DeadlineMS", read: func(t *testing.T, v int) any {
			r := req("a", job.Interactive)
			r.DeadlineMS = int64(v) * 30000
			s := viewSim(t, viewNode(0), []Request{r})
			s.enqueue(s.jobs[0])
			return queuedView(t, s, 0).DeadlineMS
		}, want: [2]any{int64(0), int64(30000)}},
		{name: "job/Models", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req([]string{"a", "b"}[v], job.Batch)})
			s.enqueue(s.jobs[0])
			return queuedView(t, s, 0).Models
		}, want: [2]any{[]string{"a"}, []string{"b"}}},
		{name: "job/Attempts", read: func(t *testing.T, v int) any {
			// Started and preempted once, or never started.
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			s.enqueue(s.jobs[0])
			if v == 1 {
				startOn(s, 0, "w0-0")
				s.stop(s.byID["w0-0"])
			}
			return queuedView(t, s, 0).Attempts
		}, want: [2]any{0, 1}},
		{name: "job/EstimatedVRAM", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req([]string{"a", "b"}[v], job.Batch)})
			s.enqueue(s.jobs[0])
			return queuedView(t, s, 0).EstimatedVRAM
		}},
		{name: "job/ModelBytes", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req([]string{"a", "b"}[v], job.Batch)})
			s.enqueue(s.jobs[0])
			return queuedView(t, s, 0).ModelBytes
		}},
		{name: "job/LoadCost", read: func(t *testing.T, v int) any {
			// The model in the RAM tier, or only at the source.
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			if v == 1 {
				s.ram.insert("a", 2e9, 0, 0)
			}
			s.enqueue(s.jobs[0])
			return queuedView(t, s, 0).LoadCost
		}},
		{name: "job/EstimatedCost", read: func(t *testing.T, v int) any {
			r := req("a", job.Batch)
			r.Samplers = steps(20 + 30*v)
			s := viewSim(t, viewNode(0), []Request{r})
			s.enqueue(s.jobs[0])
			return queuedView(t, s, 0).EstimatedCost
		}},
		{name: "job/BatchKey", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req([]string{"a", "b"}[v], job.Batch)})
			s.enqueue(s.jobs[0])
			return queuedView(t, s, 0).BatchKey
		}},
		// Running jobs.
		{name: "running/Running", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			s.enqueue(s.jobs[0])
			if v == 0 {
				return queuedView(t, s, 0).Running
			}
			startOn(s, 0, "w0-0")
			return s.runningViews()[0].Running
		}, want: [2]any{false, true}},
		{name: "running/Worker", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			startOn(s, 0, []string{"w0-0", "w1-0"}[v])
			return s.runningViews()[0].Worker
		}, want: [2]any{"w0-0", "w1-0"}},
		{name: "running/Seq", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch), req("a", job.Batch)})
			startOn(s, v, "w0-0")
			return s.runningViews()[0].Seq
		}, want: [2]any{uint64(1), uint64(2)}},
		{name: "running/RunTime", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			startOn(s, 0, "w0-0")
			s.advance(time.Second + time.Duration(v)*4*time.Second)
			return s.runningViews()[0].RunTime
		}, want: [2]any{time.Second, 5 * time.Second}},
		{name: "running/AtStepBoundary", read: func(t *testing.T, v int) any {
			// Still loading, or computing.
			r := req("a", job.Batch)
			r.Samplers = steps(2000)
			s := viewSim(t, viewNode(0), []Request{r})
			startOn(s, 0, "w0-0")
			if v == 1 {
				s.advance(s.jobs[0].load + time.Millisecond)
			}
			return s.runningViews()[0].AtStepBoundary
		}, want: [2]any{false, true}},
		{name: "running/EstimatedCost", read: func(t *testing.T, v int) any {
			r := req("a", job.Batch)
			r.Samplers = steps(20 + 30*v)
			s := viewSim(t, viewNode(0), []Request{r})
			startOn(s, 0, "w0-0")
			return s.runningViews()[0].EstimatedCost
		}},
		{name: "running/Attempts", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			for range v {
				startOn(s, 0, "w0-0")
				s.stop(s.byID["w0-0"])
			}
			startOn(s, 0, "w0-0")
			return s.runningViews()[0].Attempts
		}, want: [2]any{1, 2}},
		// Workers.
		{name: "worker/ID", read: func(t *testing.T, v int) any {
			return viewSim(t, viewNode(0), []Request{req("a", job.Batch)}).workerViews()[v].ID
		}, want: [2]any{"w0-0", "w0-1"}},
		{name: "worker/Device", read: func(t *testing.T, v int) any {
			return workerView(t, viewSim(t, viewNode(0), []Request{req("a", job.Batch)}), []string{"w0-0", "w1-0"}[v]).Device
		}, want: [2]any{0, 1}},
		{name: "worker/Idle", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			if v == 1 {
				startOn(s, 0, "w0-0")
			}
			return workerView(t, s, "w0-0").Idle
		}, want: [2]any{true, false}},
		{name: "worker/DeviceBusy", read: func(t *testing.T, v int) any {
			// Its neighbour on the device busy, or not.
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			if v == 1 {
				startOn(s, 0, "w0-0")
			}
			return workerView(t, s, "w0-1").DeviceBusy
		}, want: [2]any{0, 1}},
		{name: "worker/Resident", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req([]string{"a", "b"}[v], job.Batch)})
			startOn(s, 0, "w0-0")
			s.finish(s.byID["w0-0"])
			return workerView(t, s, "w0-0").Resident
		}},
		{name: "worker/FreeVRAM", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req([]string{"a", "b"}[v], job.Batch)})
			startOn(s, 0, "w0-0")
			return workerView(t, s, "w0-1").FreeVRAM
		}},
		{name: "worker/UsableVRAM", read: func(t *testing.T, v int) any {
			return workerView(t, viewSim(t, viewNode(v), []Request{req("a", job.Batch)}), "w1-0").UsableVRAM
		}},
		{name: "worker/H2DBytesPerS", read: func(t *testing.T, v int) any {
			return workerView(t, viewSim(t, viewNode(v), []Request{req("a", job.Batch)}), "w1-0").H2DBytesPerS
		}, want: [2]any{uint64(20e9), uint64(10e9)}},
		{name: "worker/EstimatedWait", read: func(t *testing.T, v int) any {
			r := req("a", job.Batch)
			r.Samplers = steps(20 + 30*v)
			s := viewSim(t, viewNode(0), []Request{r})
			startOn(s, 0, "w0-0")
			return workerView(t, s, "w0-0").EstimatedWait
		}},
		// VRAM entries, as the eviction policy sees a device.
		{name: "vram/Model", read: func(t *testing.T, v int) any {
			return vramEntry(t, []string{"a", "b"}[v], "w0-0", 0, 1).Model
		}, want: [2]any{"a", "b"}},
		{name: "vram/Worker", read: func(t *testing.T, v int) any {
			return vramEntry(t, "a", []string{"w0-0", "w0-1"}[v], 0, 1).Worker
		}, want: [2]any{"w0-0", "w0-1"}},
		{name: "vram/Bytes", read: func(t *testing.T, v int) any {
			return vramEntry(t, []string{"a", "b"}[v], "w0-0", 0, 1).Bytes
		}},
		{name: "vram/LastUse", read: func(t *testing.T, v int) any {
			return vramEntry(t, "a", "w0-0", time.Duration(v)*time.Minute, 1).LastUse
		}},
		{name: "vram/Inserted", read: func(t *testing.T, v int) any {
			return vramEntry(t, "a", "w0-0", time.Duration(v)*time.Minute, 1).Inserted
		}},
		{name: "vram/Hits", read: func(t *testing.T, v int) any {
			return vramEntry(t, "a", "w0-0", 0, 1+v).Hits
		}, want: [2]any{0, 1}},
		{name: "vram/Pinned", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			startOn(s, 0, "w0-0")
			if v == 1 {
				s.finish(s.byID["w0-0"])
			}
			entries, _, _ := s.deviceEntries(s.devices[0])
			return entries[0].Pinned
		}, want: [2]any{true, false}},
		{name: "vram/RecentDemand", read: func(t *testing.T, v int) any {
			// One job asked for the model, or two (the second a VRAM hit,
			// which the demand counts as it counts any job).
			return vramEntry(t, "a", "w0-0", 0, 1+v).RecentDemand
		}, want: [2]any{1.0, 2.0}},
		{name: "vram/LoadCost", read: func(t *testing.T, v int) any {
			// Loaded from the RAM tier, or from the source.
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			if v == 0 {
				s.ram.insert("a", 2e9, 0, 0)
			}
			startOn(s, 0, "w0-0")
			entries, _, _ := s.deviceEntries(s.devices[0])
			return entries[0].LoadCost
		}},
		// Host-tier entries, as the RAM and disk tiers' eviction policy
		// sees them.
		{name: "host/Model", read: func(t *testing.T, v int) any {
			return hostEntryView(t, v, []string{"a", "b"}[v], 0, 0, 0).Model
		}, want: [2]any{"a", "b"}},
		{name: "host/Worker", read: func(t *testing.T, v int) any {
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
			startOn(s, 0, "w0-0")
			h := []*hostTier{s.ram, s.disk}[v]
			return h.views([]string{"a"}, 0)[0].Worker
		}, want: [2]any{"ram", "disk"}},
		{name: "host/Bytes", read: func(t *testing.T, v int) any {
			return hostEntryView(t, v, []string{"a", "b"}[v], 0, 0, 0).Bytes
		}, want: [2]any{uint64(2e9), uint64(6e9)}},
		{name: "host/LastUse", read: func(t *testing.T, v int) any {
			return hostEntryView(t, v, "a", 0, time.Duration(v)*time.Minute, 1).LastUse
		}},
		{name: "host/Hits", read: func(t *testing.T, v int) any {
			return hostEntryView(t, v, "a", 0, time.Minute, v).Hits
		}, want: [2]any{0, 1}},
		{name: "host/Inserted", read: func(t *testing.T, v int) any {
			return hostEntryView(t, v, "a", time.Duration(v)*time.Minute, 0, 0).Inserted
		}},
		{name: "host/RecentDemand", read: func(t *testing.T, v int) any {
			// The RAM entry of a model one job asked for, or two.
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch), req("a", job.Batch)})
			startOn(s, 0, "w0-0")
			if v == 1 {
				s.finish(s.byID["w0-0"])
				startOn(s, 1, "w0-0")
			}
			return s.ram.views([]string{"a"}, s.now)[0].RecentDemand
		}},
		{name: "host/LoadCost", read: func(t *testing.T, v int) any {
			// Promoted from disk, or from the source through disk.
			s := viewSim(t, viewNode(0), []Request{req("a", job.Batch), req("a", job.Batch)})
			if v == 1 {
				s.disk.insert("a", 2e9, 0, 0)
			}
			startOn(s, 0, "w0-0")
			return s.ram.views([]string{"a"}, s.now)[0].LoadCost
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.read(t, 0), tc.read(t, 1)
			if reflect.DeepEqual(a, b) {
				t.Fatalf("the same in both situations: %v", a)
			}
			if tc.want[0] != nil && (!reflect.DeepEqual(a, tc.want[0]) || !reflect.DeepEqual(b, tc.want[1])) {
				t.Errorf("got %v, %v; want %v, %v", a, b, tc.want[0], tc.want[1])
			}
		})
	}
}

// vramEntry starts job 0 (on model) on worker w at time at, runs it
// starts times (the later ones VRAM hits) and returns the device's entry.
func vramEntry(t *testing.T, model, w string, at time.Duration, starts int) decision.EntryView {
	t.Helper()
	var reqs []Request
	for range starts {
		reqs = append(reqs, req(model, job.Batch))
	}
	s := viewSim(t, viewNode(0), reqs)
	s.advance(at)
	for i := range starts {
		startOn(s, i, w)
		s.finish(s.byID[w])
	}
	entries, _, _ := s.deviceEntries(s.devices[0])
	if len(entries) != 1 {
		t.Fatalf("%d entries, want 1", len(entries))
	}
	return entries[0]
}

// hostEntryView puts model into a RAM tier at inserted, looks it up hits
// times at lookup, and returns the tier's view of it. variant only keeps
// the tiers of the two situations apart.
func hostEntryView(t *testing.T, _ int, model string, inserted, lookup time.Duration, hits int) decision.EntryView {
	t.Helper()
	h := newHostTier("ram", 16e9, 0.9, nil)
	h.insert(model, map[string]int64{"a": 2e9, "b": 6e9}[model], inserted, time.Second)
	for range hits {
		h.lookup(model, 0, lookup)
	}
	return h.views([]string{model}, 0)[0]
}

// TestBatchVRAMIsZeroWhileBatchesRunBackToBack: one more member of a
// batch runs after the one before it, on the models already resident, so
// it needs no VRAM the lead did not; the views say 0, as the live
// dispatcher's do, rather than a guess.
func TestBatchVRAMIsZeroWhileBatchesRunBackToBack(t *testing.T) {
	s := viewSim(t, viewNode(0), []Request{req("a", job.Batch)})
	s.enqueue(s.jobs[0])
	if v := queuedView(t, s, 0); v.BatchVRAM != 0 || s.cfg.BatchExecution != BatchSequential {
		t.Errorf("BatchVRAM %d under %s execution, want 0 under sequential", v.BatchVRAM, s.cfg.BatchExecution)
	}
}

// TestFIFOIsSubmissionOrder: on one worker without batching, fifo starts
// jobs in arrival order whatever their class, and priority does not. On a
// bursty workload at a load that builds a queue, the two then differ where
// the issue says they must: interactive p95 and deadlines met (before the
// views carried arrival order across classes, fifo made priority's
// decisions and the reports were identical).
func TestFIFOIsSubmissionOrder(t *testing.T) {
	models, reqs, err := Generate(GenConfig{Kind: "bursty", Jobs: 300, Rate: 0.5, Checkpoints: 4, InteractiveFrac: 0.3,
		BurstFactor: 1.8, BurstLow: 0.3, On: 3 * time.Minute, Off: 3 * time.Minute, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	reps := map[string]*Report{}
	for _, sched := range []string{"fifo", "priority"} {
		cfg := node(1, 1, 48e9, "lru")
		cfg.Policies.Scheduling = sched
		var order []int
		rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs},
			Options{Wall: fakeWall(), OnStart: func(i int, _ string) { order = append(order, i) }})
		if err != nil {
			t.Fatal(err)
		}
		if sorted := slices.IsSorted(order); sorted != (sched == "fifo") {
			t.Errorf("%s: start order sorted %v, want %v", sched, sorted, sched == "fifo")
		}
		reps[sched] = rep
	}
	f, p := reps["fifo"].PerClass[string(job.Interactive)], reps["priority"].PerClass[string(job.Interactive)]
	t.Logf("interactive p95 fifo %.1f s, priority %.1f s; SLO attainment fifo %.3f, priority %.3f", f.P95LatencyS, p.P95LatencyS, f.SLOAttainment, p.SLOAttainment)
	if !(p.P95LatencyS < 0.8*f.P95LatencyS) || !(p.SLOAttainment > f.SLOAttainment) {
		t.Errorf("under load priority must serve interactive jobs better than fifo: p95 %.1f vs %.1f s, SLO %.3f vs %.3f",
			p.P95LatencyS, f.P95LatencyS, p.SLOAttainment, f.SLOAttainment)
	}
}
