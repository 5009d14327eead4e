package dispatch

import (
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/kernel/cost"
	"github.com/kiln-gpu/kiln/kernel/job"
	"github.com/kiln-gpu/kiln/kernel/workflow"
)

// estimates keeps each job's estimated run time (its models in, on a
// nominal device) from the cost model: what edf weighs against a deadline
// and what a busy worker's expected wait is made of. A job's graph is
// parsed once, not in every round that shows it to a policy.
type estimates struct {
	mu    sync.Mutex
	byJob map[string]time.Duration
}

// of returns j's estimate, computing it on first sight.
func (e *estimates) of(d *Dispatcher, j *job.Job) time.Duration {
	e.mu.Lock()
	est, ok := e.byJob[j.ID]
	e.mu.Unlock()
	if ok {
		return est
	}
	est = d.estimateJob(j)
	e.mu.Lock()
	if e.byJob == nil {
		e.byJob = map[string]time.Duration{}
	}
	e.byJob[j.ID] = est
	e.mu.Unlock()
	return est
}

// cached returns the estimate of the job with id if one was made.
func (e *estimates) cached(id string) (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	est, ok := e.byJob[id]
	return est, ok
}

// overgrown reports whether the map holds well more than the n jobs the
// dispatcher knows of: jobs cancelled or finished leave no other trace
// here, so they are dropped in bulk (keepOnly) rather than one by one.
func (e *estimates) overgrown(n int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.byJob) > 2*n+256
}

// keepOnly forgets the estimates of jobs not in keep.
func (e *estimates) keepOnly(keep map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id := range e.byJob {
		if !keep[id] {
			delete(e.byJob, id)
		}
	}
}

func (d *Dispatcher) estimateJob(j *job.Job) time.Duration {
	fams := make([]string, 0, len(j.Models))
	for _, m := range j.Models {
		if e, err := d.opts.Catalog.Lookup(m); err == nil {
			fams = append(fams, e.Family)
		}
	}
	// The queue's snapshots carry no graph (the store keeps summaries in
	// memory): read the job once from the store for it.
	graph := j.Workflow
	if len(graph) == 0 && d.opts.Store != nil {
		if full, err := d.opts.Store.Get(j.ID); err == nil {
			graph = full.Workflow
		}
	}
	var samplers []workflow.SamplerParams
	if len(graph) > 0 {
		// The API checked the graph on submit; one that no longer parses
		// (a limit lowered since) is estimated from its models alone.
		if g, err := workflow.Parse(graph, workflow.Limits{}.WithDefaults()); err == nil {
			samplers = g.Params()
		}
	}
	known := func(f string) bool { _, ok := d.opts.Cost.Lookup(f); return ok }
	return d.opts.Cost.JobEstimate(workflow.Work(fams, samplers, known), cost.Device{})
}
