package experiment

import (
	"context"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
)

// Follow reads the dispatcher's events until ctx ends or events closes,
// keeping when each job's models were resident (EventRunning): the split
// of a job's time between loading and running. Events are best-effort; a
// lost one leaves that job's load time unknown (counted as zero).
func (c *Controller) Follow(ctx context.Context, events <-chan job.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			if e.Type != job.EventRunning || !c.router.Active() {
				continue
			}
			c.liveMu.Lock()
			if len(c.runningAt) >= maxAssigned {
				clear(c.runningAt)
			}
			c.runningAt[e.JobID] = c.clk.Now()
			c.liveMu.Unlock()
		}
	}
}

// JobFinished is the dispatcher's JobFinished hook: it counts the job for
// its arm while an experiment runs and costs one atomic load otherwise.
// Cancelled jobs are not counted: a client's choice says nothing of a
// policy.
func (c *Controller) JobFinished(j *job.Job) {
	if !c.router.Active() || c.router.routingExperiment() {
		return // a routing experiment counts from the cluster's registry (ObserveCluster)
	}
	c.liveMu.Lock()
	running := c.runningAt[j.ID]
	delete(c.runningAt, j.ID)
	c.liveMu.Unlock()
	if o, ok := ObservationOf(j, running); ok {
		c.Observe(o)
	}
}

// ObservationOf is what a finished job says of the policies that placed
// it: running is when its models were resident (zero: unknown, the load
// is then counted in the run). ok is false for a cancelled or unfinished
// job: a client's choice says nothing of a policy.
func ObservationOf(j *job.Job, running time.Time) (o Observation, ok bool) {
	if j.State == job.Cancelled || j.FinishedAt.IsZero() {
		return o, false
	}
	o = Observation{JobID: j.ID, Worker: j.Worker, Failed: j.State == job.Failed,
		Latency: j.FinishedAt.Sub(j.CreatedAt), HasDeadline: j.DeadlineMS > 0, Interactive: j.Class == job.Interactive}
	if !j.StartedAt.IsZero() {
		o.QueueWait = j.StartedAt.Sub(j.CreatedAt)
		o.Run = j.FinishedAt.Sub(j.StartedAt)
		if running.After(j.StartedAt) {
			o.Load, o.Run = running.Sub(j.StartedAt), j.FinishedAt.Sub(running)
		}
	}
	o.MissedDeadline = o.HasDeadline && o.Latency > time.Duration(j.DeadlineMS)*time.Millisecond
	return o, true
}
