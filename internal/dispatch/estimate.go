package dispatch

import (
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// estimates keeps each job's estimated run time (its models in, on a
// nominal device) from the cost model: what edf weighs against a deadline
// and what a busy worker's expected wait is made of. Both come from the
// Facts the job carries (its graph parsed once, at submit), made once per
// job, not in every round that shows it to a policy.
type estimates struct {
	mu    sync.Mutex
	byJob map[string]time.Duration
	// plans holds each job's stage plan (PlanGraph), made on first sight
	// like its estimate.
	plans map[string]Plan
}

// planOf returns j's stage plan, making it on first sight.
func (e *estimates) planOf(d *Dispatcher, j *job.Job) Plan {
	e.mu.Lock()
	p, ok := e.plans[j.ID]
	e.mu.Unlock()
	if ok {
		return p
	}
	p = d.planJob(j)
	e.mu.Lock()
	if e.plans == nil {
		e.plans = map[string]Plan{}
	}
	e.plans[j.ID] = p
	e.mu.Unlock()
	return p
}

// planJob plans j's stages from its graph's Facts; a job whose graph
// could not be parsed is planned as one stage of all its models.
func (d *Dispatcher) planJob(j *job.Job) Plan {
	if j.Facts != nil {
		return d.fitPlan(PlanFacts(j.Facts, d.opts.Catalog.Lookup, d.opts.Cost))
	}
	st := PlanStage{Models: j.Models, ModelBytes: make([]uint64, len(j.Models))}
	for i, m := range j.Models {
		if e, err := d.opts.Catalog.Lookup(m); err == nil {
			st.ModelBytes[i] = FootprintOf(e, "")
		}
	}
	return d.fitPlan(Plan{Stages: []PlanStage{st}})
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
	return max(len(e.byJob), len(e.plans)) > 2*n+256
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
	for id := range e.plans {
		if !keep[id] {
			delete(e.plans, id)
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
	// The queue's snapshots carry the Facts the store keeps with each
	// job: its samplers are the cost model's inputs.
	var samplers []workflow.SamplerParams
	if j.Facts != nil {
		samplers = j.Facts.Samplers
	}
	known := func(f string) bool { _, ok := d.opts.Cost.Lookup(f); return ok }
	// A streamed job pays for its transfers every step: the policies see
	// a costlier placement, not a refusal.
	return d.opts.Cost.JobEstimate(workflow.Work(fams, samplers, known), cost.Device{}) +
		d.estimates.planOf(d, j).StreamTime(d.opts.Cost, cost.Device{})
}
