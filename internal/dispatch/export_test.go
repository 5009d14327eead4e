package dispatch

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// LiveJob is one job for RunLiveOrder: its class and models.
type LiveJob struct {
	Class  job.Class
	Models []string
}

// RunLiveOrder runs jobs through a live Dispatcher with the given policies
// on one device with one worker process (the stub worker of these tests),
// all of them queued before the dispatcher starts, and returns the order in
// which they started, as indices into jobs. It is exported for the
// simulator agreement test (package dispatch_test), which cannot import
// package sim from here.
func RunLiveOrder(t *testing.T, deviceMemory uint64, models map[string]int64, policies Options, jobs []LiveJob) []int {
	t.Helper()
	index := map[string]int{}
	r := newRigWith(t, rigConfig{deviceMemory: deviceMemory, perDevice: 1, models: models, policies: policies,
		before: func(r *rig) {
			for i, j := range jobs {
				index[r.submit(j.Class, `{}`, j.Models...)] = i
			}
		}})
	var order []int
	finished := 0
	timeout := time.After(60 * time.Second)
	for finished < len(jobs) {
		select {
		case e := <-r.events:
			switch e.Type {
			case job.EventStarted:
				order = append(order, index[e.JobID])
			case job.EventFinished:
				finished++
			}
		case <-timeout:
			t.Fatalf("%d of %d jobs finished; started %v", finished, len(jobs), order)
		}
	}
	return order
}

// RunPreemption runs on one worker, with preemption on, a fake clock and
// the given scheduler, a batch job that holds its worker until it is
// cancelled (on its first run only) and an interactive job queued behind
// it; once both are in, it advances the clock by advance. It returns the
// started, preempted and finished events in order ("preempted batch", ...)
// and the batch job as the store has it in the end. It is exported for
// the test with the policy host's built-ins (package dispatch_test), which
// cannot be imported from here.
func RunPreemption(t *testing.T, sched decision.Scheduler, advance time.Duration) ([]string, *job.Job) {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRigWith(t, rigConfig{deviceMemory: 24 * gib, perDevice: 1, models: map[string]int64{"checkpoints/a.safetensors": 2 * gib},
		policies: Options{Scheduler: sched, Clock: clk, Preemption: true, PreemptMinRun: 10 * time.Second}})
	marker := filepath.Join(t.TempDir(), "blocked")
	batch := r.submit(job.Batch, `{"block_once": `+strconv.Quote(marker)+`}`, "checkpoints/a.safetensors")
	r.waitRunning(batch)
	inter := r.submit(job.Interactive, `{}`, "checkpoints/a.safetensors")
	clk.Advance(advance)
	order := r.eventOrder(map[string]string{batch: "batch", inter: "inter"})
	b, err := r.store.Get(batch)
	if err != nil {
		t.Fatal(err)
	}
	return order, b
}
