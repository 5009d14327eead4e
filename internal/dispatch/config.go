package dispatch

import (
	"fmt"
	"time"
)

// Config is the dispatch section of kiln's config.
type Config struct {
	// LookaheadJobs is how many queued jobs, from the head of the queue,
	// have their models pulled up the tiers while they wait; 0 turns
	// lookahead off.
	LookaheadJobs int `koanf:"lookahead_jobs"`
	// Predict warms into the RAM tier, while fewer jobs than the
	// lookahead's window are queued, the models internal/predict expects
	// the next jobs to ask for, from the jobs seen so far (frequency with
	// decay, time of day, model-to-model transitions); never by dropping
	// a queued job's model. Off by default: its warms are transfers a
	// wrong guess wastes (kiln_predict_hit_ratio says how often).
	Predict bool `koanf:"predict"`
	// Preemption lets a scheduling policy that plans preemptions (the
	// built-in priority does) stop a running job of a lower class for a
	// waiting one when no worker is free; the stopped job goes back to
	// the queue at its place without spending an attempt.
	Preemption bool `koanf:"preemption"`
	// PreemptMinRun is how long a job must have run in its current
	// attempt before it may be preempted: each job loses at most one
	// attempt per PreemptMinRun and always makes progress.
	PreemptMinRun time.Duration `koanf:"preempt_min_run"`
	// VRAMWait bounds how long a started job waits for VRAM that running
	// jobs' pins hold before its attempt is given back to the queue, so
	// that no wait in the kernel lacks a deadline; 0 means
	// DefaultVRAMWait.
	VRAMWait time.Duration `koanf:"vram_wait"`
	// WorkerContextBytes is the VRAM each worker process holds before any
	// model (its CUDA context and allocator workspace): reserved on the
	// device's ledger, and never room for a job's stages.
	WorkerContextBytes int64 `koanf:"worker_context_bytes"`
}

// DefaultVRAMWait is the vram_wait of the embedded config and of a
// dispatcher built without one: longer than any one image job runs, so
// that it fires only when memory is not coming back.
const DefaultVRAMWait = 10 * time.Minute

// vramRetry is how often a job waiting for VRAM tries again even without
// an unpin: the eviction policy may have changed, or a load's estimate
// been corrected, since the last try.
const vramRetry = time.Second

// DefaultPreemptMinRun is the preempt_min_run of the embedded config and
// of a dispatcher built without one.
const DefaultPreemptMinRun = 10 * time.Second

// DefaultLookaheadJobs is the lookahead of the embedded config and of a
// dispatcher built without one.
const DefaultLookaheadJobs = 4

// Validate checks the section; errors name the full key.
func (c Config) Validate() error {
	if c.LookaheadJobs < 0 || c.LookaheadJobs > 256 {
		return fmt.Errorf("dispatch.lookahead_jobs: must be between 0 and 256, got %d", c.LookaheadJobs)
	}
	if c.VRAMWait < 0 {
		return fmt.Errorf("dispatch.vram_wait: must not be negative, got %s", c.VRAMWait)
	}
	if c.WorkerContextBytes < 0 {
		return fmt.Errorf("dispatch.worker_context_bytes: must not be negative, got %d", c.WorkerContextBytes)
	}
	if c.PreemptMinRun < 0 {
		return fmt.Errorf("dispatch.preempt_min_run: must not be negative, got %s", c.PreemptMinRun)
	}
	return nil
}
