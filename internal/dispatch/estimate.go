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
	// like its estimate, with the fitKey it was made under.
	plans map[string]keyedPlan
}

// keyedPlan is a job's plan and the fitKey it was made under.
type keyedPlan struct {
	plan Plan
	fit  fitKey
}

// planOf returns j's stage plan, making it on first sight and again when
// the node's fitKey has changed since (a recovered job planned before the
// workers said hello would otherwise keep a plan that streams nothing);
// the job's estimate, which prices its streaming, is then made again too.
func (e *estimates) planOf(d *Dispatcher, j *job.Job) Plan {
	k := d.currentFit()
	e.mu.Lock()
	c, ok := e.plans[j.ID]
	e.mu.Unlock()
	if ok && c.fit == k {
		return c.plan
	}
	p := d.planJob(j, k)
	e.mu.Lock()
	if e.plans == nil {
		e.plans = map[string]keyedPlan{}
	}
	e.plans[j.ID] = keyedPlan{plan: p, fit: k}
	if ok {
		delete(e.byJob, j.ID)
	}
	e.mu.Unlock()
	return p
}

// planJob plans j's stages from its graph's Facts for a node as k says;
// a job whose graph could not be parsed is planned as one stage of all
// its models.
func (d *Dispatcher) planJob(j *job.Job, k fitKey) Plan {
	if j.Facts != nil {
		return d.fitPlanFor(PlanFacts(j.Facts, d.opts.Catalog.Lookup, d.opts.Cost), k)
	}
	st := PlanStage{Models: j.Models, ModelBytes: make([]uint64, len(j.Models))}
	for i, m := range j.Models {
		if e, err := d.opts.Catalog.Lookup(m); err == nil {
			st.ModelBytes[i] = FootprintOf(e, "")
		}
	}
	return d.fitPlanFor(Plan{Stages: []PlanStage{st}}, k)
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
	return d.opts.Cost.JobEstimate(JobWork(fams, samplers, known), cost.Device{}) +
		d.estimates.planOf(d, j).StreamTime(d.opts.Cost, cost.Device{})
}
