package sim

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

func TestPreemption(t *testing.T) {
	// One worker. A long batch job (2,000 steps) starts at 0 and loads a;
	// an interactive job on the same model arrives at 1 s. With preemption
	// on and priority's max_wait_ms at 0, the batch job is stopped once it
	// has run min-run (5 s), the interactive job runs with a warm, and the
	// batch job starts over after it, its first 5 s lost.
	models := []Model{{ID: "a", Bytes: 2e9, Family: "sd15"}, {ID: "b", Bytes: 2e9, Family: "sd15"}}
	long := []workflow.SamplerParams{{Steps: 2000, Width: 512, Height: 512, BatchSize: 1}}
	trace := func(batchJobs int, interactive string) []Request {
		var reqs []Request
		for range batchJobs {
			reqs = append(reqs, Request{Models: []string{"a"}, Class: job.Batch, Samplers: long})
		}
		return append(reqs, Request{Time: time.Second, Models: []string{interactive}, Class: job.Interactive})
	}
	c := cost.Default()
	dev := cost.Device{ComputeFactor: 1}
	load := 2.0 + 2e9/1.7e9 + (0.5 + 2e9/10e9) // cold: source, disk, host→device
	short := c.JobEstimate(cost.TextToImage("sd15", defaultSteps, 512, 512, 1), dev).Seconds()
	longWork := cost.Work{Family: "sd15", TextEncodes: 2, Samplers: []cost.Sample{{Family: "sd15", Steps: 2000, Width: 512, Height: 512, Batch: 1}},
		Decodes: []cost.Image{{Family: "sd15", Width: 512, Height: 512, Batch: 1}}}
	batch := c.JobEstimate(longWork, dev).Seconds()
	fusedWork := longWork
	fusedWork.TextEncodes = 4
	fusedWork.Samplers = []cost.Sample{{Family: "sd15", Steps: 2000, Width: 512, Height: 512, Batch: 2}}
	fusedWork.Decodes = []cost.Image{{Family: "sd15", Width: 512, Height: 512, Batch: 2}}
	fused := c.JobEstimate(fusedWork, dev).Seconds()
	if batch < 40 || load > 5 {
		t.Fatalf("the workload assumes a long batch job (%v s) that loads within min-run (%v s)", batch, load)
	}
	const minRun = 5.0
	for _, tc := range []struct {
		name       string
		preemption bool
		minRun     time.Duration
		scheduling string
		batchJobs  int
		batching   string
		exec       string // sim.batch_execution; "" the default
		// other puts the interactive job on a model of its own.
		other bool
		// want: the interactive job's latency, the batch jobs' latency,
		// preemptions and work lost.
		interactive, batch, lost float64
		preemptions              int
	}{
		{name: "on", preemption: true, minRun: minRun * time.Second, batchJobs: 1,
			interactive: (minRun - 1) + short, batch: minRun + short + batch, lost: minRun, preemptions: 1},
		{name: "off", batchJobs: 1,
			interactive: load + batch - 1 + short, batch: load + batch},
		{name: "min run longer than the job", preemption: true, minRun: time.Hour, batchJobs: 1,
			interactive: load + batch - 1 + short, batch: load + batch},
		{name: "scheduler that never preempts", preemption: true, minRun: minRun * time.Second, scheduling: "fifo", batchJobs: 1,
			interactive: load + batch - 1 + short, batch: load + batch},
		// A fused batch goes back whole; the two jobs run fused again
		// after the interactive job, which loads its own model (on the
		// same model, the batcher would put them behind it in its batch).
		{name: "fused batch", preemption: true, minRun: minRun * time.Second, batchJobs: 2, batching: "same-model", exec: BatchFused, other: true,
			interactive: (minRun - 1) + load + short, batch: minRun + load + short + fused, lost: minRun, preemptions: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node(1, 1, 24e9, "lru")
			cfg.Preemption, cfg.PreemptMinRun = tc.preemption, tc.minRun
			cfg.Policies.Scheduling, cfg.Policies.Batching, cfg.BatchExecution = tc.scheduling, tc.batching, tc.exec
			if tc.scheduling == "" {
				cfg.Params = map[string]map[string]float64{"scheduling": {"max_wait_ms": 0}}
			}
			interactive, loads := "a", int64(1)
			if tc.other {
				interactive, loads = "b", 2
			}
			rep := run(t, cfg, models, trace(tc.batchJobs, interactive))
			if rep.Completed != tc.batchJobs+1 || rep.Failed != 0 {
				t.Fatalf("completed %d, failed %d; want every job done", rep.Completed, rep.Failed)
			}
			if rep.Preemptions != tc.preemptions || !near(rep.PreemptedWorkS, tc.lost) {
				t.Errorf("preemptions %d losing %v s; want %d losing %v s", rep.Preemptions, rep.PreemptedWorkS, tc.preemptions, tc.lost)
			}
			if got := rep.PerClass[string(job.Interactive)].P99LatencyS; math.Abs(got-tc.interactive) > 1e-6 {
				t.Errorf("interactive latency %v s, want %v", got, tc.interactive)
			}
			if got := rep.PerClass[string(job.Batch)].P99LatencyS; math.Abs(got-tc.batch) > 1e-6 {
				t.Errorf("batch latency %v s, want %v", got, tc.batch)
			}
			// The models stay resident: a restart loads nothing.
			if rep.ColdLoads != loads {
				t.Errorf("cold loads %d, want %d", rep.ColdLoads, loads)
			}
		})
	}
}

func TestPreemptionWaitsForThePolicy(t *testing.T) {
	// priority preempts only for an interactive job older than its
	// max_wait_ms (30 s by default); the simulator looks again every
	// second, as the live dispatcher's wake-up does, so the job that
	// arrived at 1 s starts in the first look after it turned 30 s old.
	models := []Model{{ID: "a", Bytes: 2e9, Family: "sd15"}}
	reqs := []Request{
		{Models: []string{"a"}, Class: job.Batch, Samplers: []workflow.SamplerParams{{Steps: 2000, Width: 512, Height: 512, BatchSize: 1}}},
		{Time: time.Second, Models: []string{"a"}, Class: job.Interactive},
	}
	cfg := node(1, 1, 24e9, "lru")
	cfg.Preemption, cfg.PreemptMinRun = true, 5*time.Second
	rep := run(t, cfg, models, reqs)
	short := cost.Default().JobEstimate(cost.TextToImage("sd15", defaultSteps, 512, 512, 1), cost.Device{ComputeFactor: 1}).Seconds()
	got := rep.PerClass[string(job.Interactive)].P99LatencyS - short
	if rep.Preemptions != 1 || got <= 30 || got > 31+1e-9 {
		t.Errorf("preemptions %d, interactive job waited %v s; want 1 and a wait in (30, 31]", rep.Preemptions, got)
	}
}

func TestPreemptionReported(t *testing.T) {
	rep := &Report{Preemptions: 3, PreemptedWorkS: 12.5}
	var b strings.Builder
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| preemptions | 3 (12.5 s of work lost) |") {
		t.Errorf("markdown report lacks the preemptions:\n%s", b.String())
	}
}
