package policy

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// recorder is a policy of every kind that keeps a copy of its last input
// and answers as simply as it can, so that a test can see exactly what the
// adapters hand a policy.
type recorder struct{}

var (
	recordedSched abi.SchedulingInput
	recordedBal   abi.BalancingInput
	recordedEvict abi.EvictionInput
)

func (recorder) Schedule(in *abi.SchedulingInput, out *abi.SchedulingOutput) abi.Status {
	recordedSched = cloneSched(in)
	for i := range in.Queued {
		out.Dispatch = append(out.Dispatch, uint32(i))
	}
	return abi.StatusOK
}

func (recorder) Balance(in *abi.BalancingInput, out *abi.BalancingOutput) abi.Status {
	recordedBal = *in
	recordedBal.Workers = slices.Clone(in.Workers)
	recordedBal.Models = slices.Clone(in.Models)
	for i, w := range in.Workers {
		if w.Idle && abi.Fits(&in.Job, &in.Workers[i]) {
			out.Worker = uint32(i)
			return abi.StatusOK
		}
	}
	return abi.StatusNoDecision
}

func (recorder) Evict(in *abi.EvictionInput, out *abi.EvictionOutput) abi.Status {
	recordedEvict = *in
	recordedEvict.Entries = slices.Clone(in.Entries)
	recordedEvict.RecentDemand = slices.Clone(in.RecentDemand)
	for i := range in.Entries {
		// A tag per entry, from its bytes, for the tag round trip.
		out.Tags = append(out.Tags, abi.TagUpdate{Entry: uint32(i), Tag: in.Entries[i].Bytes + 1})
	}
	return abi.StatusOK
}

func cloneSched(in *abi.SchedulingInput) abi.SchedulingInput {
	c := *in
	c.Queued, c.Running, c.Workers, c.Models = slices.Clone(in.Queued), slices.Clone(in.Running), slices.Clone(in.Workers), slices.Clone(in.Models)
	for i := range c.Queued {
		c.Queued[i].Models = slices.Clone(in.Queued[i].Models)
	}
	for i := range c.Workers {
		c.Workers[i].Resident = slices.Clone(in.Workers[i].Resident)
	}
	return c
}

func init() {
	for _, k := range []abi.Kind{abi.KindScheduling, abi.KindBalancing, abi.KindEviction} {
		RegisterNative(k, "test-recorder", func() any { return recorder{} })
	}
}

// TestEveryViewFieldReachesThePolicy changes one field at a time of the
// dispatcher's job, worker and cache-entry views and checks that what the
// policy receives changes with it: a conversion that dropped a field,
// zeroed it or filled it with a constant would give the policy the same
// input twice, and a policy that depends on the field could not decide
// differently (issue: views that tell the truth).
func TestEveryViewFieldReachesThePolicy(t *testing.T) {
	h := newTestHost(t, Config{NativeBuiltins: true, Scheduling: "test-recorder", Balancing: "test-recorder", Eviction: "test-recorder"})
	now := time.Now()
	baseJobs := func() []decision.JobView {
		return []decision.JobView{
			{ID: "a", Class: job.Batch, Seq: 1, Age: time.Second, Models: []string{"m1"}, ModelBytes: []uint64{1 << 30},
				LoadCost: []time.Duration{time.Second}, EstimatedVRAM: 1 << 30, EstimatedCost: time.Second, BatchKey: "k1", Attempts: 1},
			{ID: "b", Class: job.Batch, Seq: 2, Age: time.Second, Models: []string{"m2"}, ModelBytes: []uint64{2 << 30},
				LoadCost: []time.Duration{time.Second}, EstimatedVRAM: 2 << 30, EstimatedCost: time.Second, BatchKey: "k2"},
		}
	}
	baseRunning := func() []decision.JobView {
		return []decision.JobView{{ID: "r", Class: job.Batch, Seq: 3, Models: []string{"m1"}, Running: true, Worker: "w0", RunTime: time.Minute}}
	}
	baseWorkers := func() []decision.WorkerView {
		return []decision.WorkerView{
			{ID: "w0", Device: 0, DeviceBusy: 1, UsableVRAM: 8 << 30, FreeVRAM: 1 << 30, EstimatedWait: time.Second, H2DBytesPerS: 1e9},
			{ID: "w1", Device: 1, Idle: true, UsableVRAM: 8 << 30, FreeVRAM: 4 << 30, H2DBytesPerS: 1e9,
				Resident: []decision.ResidentModel{{Model: "m9", Bytes: 1 << 30}}},
		}
	}
	sched := func(jobs, running []decision.JobView, workers []decision.WorkerView) abi.SchedulingInput {
		h.Scheduler().Plan(jobs, running, workers)
		return recordedSched
	}
	jobCases := []struct {
		field  string
		change func(j *decision.JobView)
		seen   func(in abi.SchedulingInput) any
	}{
		{"Seq", func(j *decision.JobView) { j.Seq = 9 }, func(in abi.SchedulingInput) any { return in.Queued[0].Seq }},
		{"Class", func(j *decision.JobView) { j.Class = job.Interactive }, func(in abi.SchedulingInput) any { return in.Queued[0].Class }},
		{"Age", func(j *decision.JobView) { j.Age = time.Hour }, func(in abi.SchedulingInput) any { return in.Queued[0].Age }},
		{"DeadlineMS", func(j *decision.JobView) { j.DeadlineMS = 30000 }, func(in abi.SchedulingInput) any {
			return fmt.Sprint(in.Queued[0].HasDeadline, in.Queued[0].Slack)
		}},
		{"Models", func(j *decision.JobView) { j.Models = []string{"m2"} }, func(in abi.SchedulingInput) any {
			return fmt.Sprint(in.Queued[0].Models, in.Queued[1].Models)
		}},
		{"Attempts", func(j *decision.JobView) { j.Attempts = 3 }, func(in abi.SchedulingInput) any { return in.Queued[0].Attempts }},
		{"EstimatedVRAM", func(j *decision.JobView) { j.EstimatedVRAM = 5 << 30 }, func(in abi.SchedulingInput) any { return in.Queued[0].VRAM }},
		{"ModelBytes", func(j *decision.JobView) { j.ModelBytes = []uint64{3 << 30} }, func(in abi.SchedulingInput) any {
			return in.Models[in.Queued[0].Models[0]].Bytes
		}},
		{"LoadCost", func(j *decision.JobView) { j.LoadCost = []time.Duration{time.Minute} }, func(in abi.SchedulingInput) any {
			return in.Models[in.Queued[0].Models[0]].LoadCost
		}},
		{"EstimatedCost", func(j *decision.JobView) { j.EstimatedCost = time.Minute }, func(in abi.SchedulingInput) any { return in.Queued[0].EstCost }},
		{"BatchKey", func(j *decision.JobView) { j.BatchKey = "k2" }, func(in abi.SchedulingInput) any {
			return in.Queued[0].BatchKey == in.Queued[1].BatchKey
		}},
		{"BatchVRAM", func(j *decision.JobView) { j.BatchVRAM = 1 << 29 }, func(in abi.SchedulingInput) any { return in.Queued[0].BatchVRAM }},
	}
	for _, tc := range jobCases {
		t.Run("job."+tc.field, func(t *testing.T) {
			before := fmt.Sprint(tc.seen(sched(baseJobs(), baseRunning(), baseWorkers())))
			jobs := baseJobs()
			tc.change(&jobs[0])
			if after := fmt.Sprint(tc.seen(sched(jobs, baseRunning(), baseWorkers()))); after == before {
				t.Errorf("the policy saw %s both times: the field does not reach it", before)
			}
		})
	}
	runningCases := []struct {
		field  string
		change func(j *decision.JobView)
		seen   func(in abi.SchedulingInput) any
	}{
		{"Worker", func(j *decision.JobView) { j.Worker = "w1" }, func(in abi.SchedulingInput) any { return in.Running[0].Worker }},
		{"Running", func(j *decision.JobView) { j.Running = false }, func(in abi.SchedulingInput) any { return in.Running[0].Worker }},
		{"AtStepBoundary", func(j *decision.JobView) { j.AtStepBoundary = true }, func(in abi.SchedulingInput) any { return in.Running[0].AtStepBoundary }},
	}
	for _, tc := range runningCases {
		t.Run("running."+tc.field, func(t *testing.T) {
			before := fmt.Sprint(tc.seen(sched(baseJobs(), baseRunning(), baseWorkers())))
			running := baseRunning()
			tc.change(&running[0])
			if after := fmt.Sprint(tc.seen(sched(baseJobs(), running, baseWorkers()))); after == before {
				t.Errorf("the policy saw %s both times: the field does not reach it", before)
			}
		})
	}
	workerCases := []struct {
		field  string
		change func(w *decision.WorkerView)
		seen   func(w abi.Worker, in abi.SchedulingInput) any
	}{
		{"Device", func(w *decision.WorkerView) { w.Device = 3 }, func(w abi.Worker, _ abi.SchedulingInput) any { return w.Device }},
		{"Idle", func(w *decision.WorkerView) { w.Idle = false }, func(w abi.Worker, _ abi.SchedulingInput) any { return w.Idle }},
		{"DeviceBusy", func(w *decision.WorkerView) { w.DeviceBusy = 2 }, func(w abi.Worker, _ abi.SchedulingInput) any { return w.DeviceBusy }},
		{"Resident", func(w *decision.WorkerView) { w.Resident = nil }, func(w abi.Worker, _ abi.SchedulingInput) any { return len(w.Resident) }},
		{"Resident.Bytes", func(w *decision.WorkerView) { w.Resident = []decision.ResidentModel{{Model: "m8", Bytes: 7 << 30}} },
			func(w abi.Worker, in abi.SchedulingInput) any { return in.Models[w.Resident[0]].Bytes }},
		{"FreeVRAM", func(w *decision.WorkerView) { w.FreeVRAM = 2 << 30 }, func(w abi.Worker, _ abi.SchedulingInput) any { return w.FreeVRAM }},
		{"UsableVRAM", func(w *decision.WorkerView) { w.UsableVRAM = 20 << 30 }, func(w abi.Worker, _ abi.SchedulingInput) any { return w.UsableVRAM }},
		{"Degraded", func(w *decision.WorkerView) { w.Degraded = true }, func(w abi.Worker, _ abi.SchedulingInput) any { return w.Degraded }},
		{"EstimatedWait", func(w *decision.WorkerView) { w.EstimatedWait = time.Minute }, func(w abi.Worker, _ abi.SchedulingInput) any { return w.Wait }},
		{"H2DBytesPerS", func(w *decision.WorkerView) { w.H2DBytesPerS = 2e10 }, func(w abi.Worker, _ abi.SchedulingInput) any { return w.H2DBytesPerS }},
	}
	for _, tc := range workerCases {
		t.Run("worker."+tc.field, func(t *testing.T) {
			in := sched(baseJobs(), baseRunning(), baseWorkers())
			before := fmt.Sprint(tc.seen(in.Workers[1], in))
			workers := baseWorkers()
			tc.change(&workers[1])
			in = sched(baseJobs(), baseRunning(), workers)
			if after := fmt.Sprint(tc.seen(in.Workers[1], in)); after == before {
				t.Errorf("the policy saw %s both times: the field does not reach it", before)
			}
			// The balancing input is built by the same conversion; check it
			// there too.
			h.Balancer().Place(baseJobs()[0], baseWorkers())
			bBefore := fmt.Sprint(tc.seen(recordedBal.Workers[1], abi.SchedulingInput{Models: recordedBal.Models}))
			h.Balancer().Place(baseJobs()[0], workers)
			if bAfter := fmt.Sprint(tc.seen(recordedBal.Workers[1], abi.SchedulingInput{Models: recordedBal.Models})); bAfter == bBefore {
				t.Errorf("balancing: the policy saw %s both times", bBefore)
			}
		})
	}
	baseEntries := func() []decision.EntryView {
		return []decision.EntryView{
			{Model: "m1", Worker: "w0", Bytes: 1 << 30, LastUse: now.Add(-time.Minute), Inserted: now.Add(-time.Hour), LoadCost: time.Second, Hits: 2},
			{Model: "m2", Worker: "w1", Bytes: 2 << 30, LastUse: now.Add(-time.Minute), Inserted: now.Add(-time.Hour), LoadCost: time.Second, Hits: 2},
		}
	}
	evict := func(entries []decision.EntryView) abi.EvictionInput {
		h.NewEvictor().Victims(0, entries)
		return recordedEvict
	}
	entryCases := []struct {
		field  string
		change func(e *decision.EntryView)
		seen   func(in abi.EvictionInput) any
	}{
		{"Model", func(e *decision.EntryView) { e.Model = "m2" }, func(in abi.EvictionInput) any { return in.Entries[0].Model == in.Entries[1].Model }},
		{"Worker", func(e *decision.EntryView) { e.Worker = "w1" }, func(in abi.EvictionInput) any { return in.Entries[0].Worker == in.Entries[1].Worker }},
		{"Bytes", func(e *decision.EntryView) { e.Bytes = 3 << 30 }, func(in abi.EvictionInput) any { return in.Entries[0].Bytes }},
		{"LastUse", func(e *decision.EntryView) { e.LastUse = now.Add(-48 * time.Hour) }, func(in abi.EvictionInput) any {
			return in.Entries[0].SinceUse > time.Hour
		}},
		{"Inserted", func(e *decision.EntryView) { e.Inserted = now.Add(-48 * time.Hour) }, func(in abi.EvictionInput) any {
			return in.Entries[0].SinceInsert > 2*time.Hour
		}},
		{"LoadCost", func(e *decision.EntryView) { e.LoadCost = time.Minute }, func(in abi.EvictionInput) any { return in.Entries[0].LoadCost }},
		{"Hits", func(e *decision.EntryView) { e.Hits = 40 }, func(in abi.EvictionInput) any { return in.Entries[0].Hits }},
		{"Pinned", func(e *decision.EntryView) { e.Pinned = true }, func(in abi.EvictionInput) any { return in.Entries[0].Pinned }},
		{"RecentDemand", func(e *decision.EntryView) { e.RecentDemand = 2.5 }, func(in abi.EvictionInput) any { return in.EntryDemand(0) }},
	}
	for _, tc := range entryCases {
		t.Run("entry."+tc.field, func(t *testing.T) {
			before := fmt.Sprint(tc.seen(evict(baseEntries())))
			entries := baseEntries()
			tc.change(&entries[0])
			if after := fmt.Sprint(tc.seen(evict(entries))); after == before {
				t.Errorf("the policy saw %s both times: the field does not reach it", before)
			}
		})
	}
	t.Run("entry.Tag", func(t *testing.T) {
		e := h.NewEvictor()
		e.Victims(0, baseEntries())
		e.Victims(0, baseEntries())
		if got := recordedEvict.Entries[1].Tag; got != (2<<30)+1 {
			t.Errorf("second call saw tag %d, want the %d the first answer set", got, (2<<30)+1)
		}
	})
}
