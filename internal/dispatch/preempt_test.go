package dispatch

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// preemptingPriority is the priority built-in with a plan: when an interactive job
// leads the queue it preempts the newest running batch job at a step
// boundary, as the built-in priority policy does once its max_wait_ms has
// passed (here at once, so that the test controls time through the
// dispatcher's minimum run alone).
type preemptingPriority struct{ priorityBuiltin }

var (
	_ decision.Scheduler = preemptingPriority{}
	_ decision.Planner   = preemptingPriority{}
)

func (p preemptingPriority) PlanIDs(queued, running []decision.JobView, workers []decision.WorkerView) ([]string, []string) {
	id, ok := p.Next(queued, workers)
	if !ok {
		return nil, nil
	}
	i := slices.IndexFunc(queued, func(j decision.JobView) bool { return j.ID == id })
	if queued[i].Class != job.Interactive {
		return []string{id}, nil
	}
	victim := -1
	for k, r := range running {
		if r.Class == job.Batch && r.AtStepBoundary && (victim < 0 || r.Seq > running[victim].Seq) {
			victim = k
		}
	}
	if victim < 0 {
		return []string{id}, nil
	}
	return []string{id}, []string{running[victim].ID}
}

// waitRunning waits until the job's worker has reported a step, which puts
// it at a step boundary for the preemption rules.
func (r *rig) waitRunning(id string) {
	r.t.Helper()
	r.waitState(id, job.Running)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p, ok := r.d.Progress(id); ok && p.Phase == "running" && p.Max > 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("job %s never reported a step", id)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestDispatchPreemptsABatchJobForAnInteractiveOne fills the only worker
// with a batch job and queues an interactive one. Before the batch job has
// run for preempt_min_run (on the dispatcher's fake clock) nothing happens;
// after it, the batch job is cancelled on its worker and given back to the
// queue, the interactive job runs first, and the batch job then runs again
// and finishes exactly once, with its preemption not counted as a lost
// attempt.
func TestDispatchPreemptsABatchJobForAnInteractiveOne(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var hooked atomic.Int64
	r := newRigWith(t, rigConfig{deviceMemory: 24 * gib, perDevice: 1, models: map[string]int64{"checkpoints/a.safetensors": 2 * gib},
		policies: Options{Scheduler: preemptingPriority{}, Clock: clk, Preemption: true, PreemptMinRun: 10 * time.Second,
			Hooks: Hooks{JobPreempted: func(j *job.Job) {
				if j.State == job.Queued && j.Preemptions == 1 {
					hooked.Add(1)
				}
			}}}})
	marker := filepath.Join(t.TempDir(), "blocked")
	batch := r.submit(job.Batch, `{"block_once": `+strconv.Quote(marker)+`}`, "checkpoints/a.safetensors")
	r.waitRunning(batch)
	inter := r.submit(job.Interactive, `{}`, "checkpoints/a.safetensors")

	// Short of the minimum run, rounds pass and the batch job keeps its
	// worker.
	clk.Advance(9 * time.Second)
	r.waitRounds(2)
	if j, _ := r.store.Get(batch); j.State != job.Running || j.Preemptions != 0 {
		t.Fatalf("batch job before preempt_min_run: %s with %d preemptions, want running with none", j.State, j.Preemptions)
	}
	if j, _ := r.store.Get(inter); j.State != job.Queued {
		t.Fatalf("interactive job %s while the only worker is busy", j.State)
	}

	clk.Advance(2 * time.Second)
	order := r.eventOrder(map[string]string{batch: "batch", inter: "inter"})
	want := []string{"started batch", "preempted batch", "started inter", "finished inter", "started batch", "finished batch"}
	if !slices.Equal(order, want) {
		t.Errorf("events %v\nwant   %v", order, want)
	}
	b, _ := r.store.Get(batch)
	if b.State != job.Done || b.Attempts != 2 || b.Preemptions != 1 || len(b.Outputs) != 1 {
		t.Errorf("batch job = state %s attempts %d preemptions %d outputs %v; want done, 2, 1, one output",
			b.State, b.Attempts, b.Preemptions, b.Outputs)
	}
	if i, _ := r.store.Get(inter); i.State != job.Done || i.Attempts != 1 {
		t.Errorf("interactive job = state %s attempts %d", i.State, i.Attempts)
	}
	if n := hooked.Load(); n != 1 {
		t.Errorf("JobPreempted hook saw %d preemptions, want 1", n)
	}
}

// eventOrder reads the bus until every job of names has finished, waking
// the dispatcher meanwhile (a round that sees a clock the test advanced may
// start late), and returns the started, preempted and finished events as
// "type name". A second finish of a job fails the test.
func (r *rig) eventOrder(names map[string]string) []string {
	r.t.Helper()
	var order []string
	finished := map[string]int{}
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(finished) < len(names) {
		select {
		case e := <-r.events:
			switch e.Type {
			case job.EventStarted, job.EventPreempted, job.EventFinished:
				order = append(order, string(e.Type)+" "+names[e.JobID])
			}
			if e.Type == job.EventFinished {
				finished[e.JobID]++
			}
		case <-tick.C:
			r.d.Wake()
		case <-deadline:
			r.t.Fatalf("events so far: %v", order)
		}
	}
	// The store records an outcome before its event goes out, so anything
	// published for these jobs is on the channel by now.
	for {
		select {
		case e := <-r.events:
			if e.Type == job.EventFinished || e.Type == job.EventPreempted {
				r.t.Errorf("%s after every job finished: %+v", e.Type, e)
			}
		default:
			return order
		}
	}
}

// waitRounds waits until the dispatch loop has finished n rounds that
// started after the call, waking it meanwhile.
func (r *rig) waitRounds(n uint64) {
	r.t.Helper()
	// A round that was running at the call may have read the state from
	// before it; the first round that ends after it may be that one.
	target := r.d.rounds.Load() + n + 1
	deadline := time.Now().Add(30 * time.Second)
	for r.d.rounds.Load() < target {
		if time.Now().After(deadline) {
			r.t.Fatalf("the dispatch loop did not finish %d rounds", n)
		}
		r.d.Wake()
		time.Sleep(time.Millisecond)
	}
}

// TestDispatchDoesNotPreemptWithoutAPlanOrPermission runs a batch job
// past the minimum run while an interactive job waits for the only worker:
// with the native scheduler (it has no plan) or with preemption off, the
// batch job keeps its worker and finishes on its first attempt, and only
// then does the interactive job start.
func TestDispatchDoesNotPreemptWithoutAPlanOrPermission(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sched decision.Scheduler
		on    bool
	}{
		{name: "native FIFO", sched: priorityBuiltin{}, on: true},
		{name: "preemption off", sched: preemptingPriority{}, on: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			r := newRigWith(t, rigConfig{deviceMemory: 24 * gib, perDevice: 1, models: map[string]int64{"checkpoints/a.safetensors": 2 * gib},
				policies: Options{Scheduler: tc.sched, Clock: clk, Preemption: tc.on, PreemptMinRun: 10 * time.Second}})
			gate := filepath.Join(t.TempDir(), "open")
			batch := r.submit(job.Batch, `{"gate": `+strconv.Quote(gate)+`}`, "checkpoints/a.safetensors")
			r.waitRunning(batch)
			inter := r.submit(job.Interactive, `{}`, "checkpoints/a.safetensors")
			clk.Advance(time.Minute)
			r.waitRounds(3)
			if j, _ := r.store.Get(batch); j.State != job.Running || j.Attempts != 1 {
				t.Fatalf("batch job after a minute behind an interactive one: %s, attempt %d", j.State, j.Attempts)
			}
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			order := r.eventOrder(map[string]string{batch: "batch", inter: "inter"})
			want := []string{"started batch", "finished batch", "started inter", "finished inter"}
			if !slices.Equal(order, want) {
				t.Errorf("events %v\nwant   %v", order, want)
			}
			if b, _ := r.store.Get(batch); b.State != job.Done || b.Attempts != 1 || b.Preemptions != 0 {
				t.Errorf("batch job = state %s attempts %d preemptions %d; want done, 1, 0", b.State, b.Attempts, b.Preemptions)
			}
		})
	}
}
