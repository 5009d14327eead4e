package sim

import (
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// preemptPoll is how long the simulator waits before it looks for a
// preemption again when one may become due with no event to say so: a
// running job reaching PreemptMinRun, or a waiting job growing old enough
// for the policy (priority's max_wait_ms). Live, the dispatcher's safety-net
// wake-up (Dispatcher.Run waits at most a second between rounds) is what
// notices those; the simulator polls at the same pace, and only while a
// preemption is possible, so that runs without one keep their events.
const preemptPoll = time.Second

// preempt mirrors Dispatcher.preempt: when preemption is on, the scheduler
// is a decision.Planner, no worker is idle and an interactive job waits,
// the decision core (dispatch.Core.Preempt, which enforces the minimum run
// and the class rule) may name one running job to stop. It reports whether
// it stopped one. During a canary the router plans nothing, so nothing is
// preempted, as live.
//
// # Notes
//
// Live, the preempted worker stops at its next step boundary, well under a
// second for the cost model's steps; the simulator stops it at once rather
// than model steps, and so has at most one preemption in flight, as live.
func (s *simulator) preempt() bool {
	if !s.cfg.Preemption || len(s.queues[classIndex(job.Interactive)]) == 0 || s.anyIdle() {
		return false
	}
	if _, ok := s.core.Scheduler.(decision.Planner); !ok {
		return false
	}
	minRun := s.cfg.PreemptMinRun
	running := s.runningViews()
	// As live, skip the policy call until some lower-class job has run
	// long enough; then look again when the first one will have.
	ripe, ripeAt := false, time.Duration(-1)
	for _, r := range running {
		switch {
		case r.Class == job.Interactive:
		case r.RunTime >= minRun:
			ripe = true
		case ripeAt < 0 || s.now+minRun-r.RunTime < ripeAt:
			ripeAt = s.now + minRun - r.RunTime
		}
	}
	if !ripe {
		if ripeAt >= 0 {
			s.poll(max(ripeAt, s.now+preemptPoll))
		}
		return false
	}
	p, ok, fault := s.core.Preempt(s.queuedViews(s.cfg.QueueView), running, s.workerViews(), minRun)
	if fault != nil {
		s.opts.Log.Error().Err(fault).Msg("ignoring the scheduling policy's preemptions")
	}
	if !ok {
		s.poll(s.now + preemptPoll)
		return false
	}
	w := s.byID[p.Worker]
	if w == nil || w.batch == nil || s.current(w).id != p.JobID {
		return false // Core.Preempt names only jobs it was shown
	}
	s.stop(w)
	return true
}

// poll schedules a dispatch round at virtual time at unless one is due
// already by then.
func (s *simulator) poll(at time.Duration) {
	if s.pollAt > s.now && s.pollAt <= at {
		return
	}
	s.pollAt = at
	s.push(event{at: at, kind: evPoll})
}

// current is the job of w's batch that runs now: the lead of a fused batch
// (its members run as one), else the first member not yet done.
func (s *simulator) current(w *simWorker) *simJob {
	if w.batch[0].shared > 1 {
		return w.batch[0]
	}
	for _, j := range w.batch {
		if j.done > s.now {
			return j
		}
	}
	return w.batch[len(w.batch)-1]
}

// runningViews describes the running jobs as Dispatcher.runningViews does:
// one per busy worker, in submission order, with the time the job has held
// its worker in this attempt (loading included) and whether its models are
// in (AtStepBoundary: a job still loading has no step to stop at).
func (s *simulator) runningViews() []decision.JobView {
	var out []decision.JobView
	for _, w := range s.workers {
		if w.batch == nil {
			continue
		}
		j := s.current(w)
		out = append(out, decision.JobView{
			ID: j.id, Class: j.req.Class, Seq: j.seq, Age: s.now - j.req.Time, DeadlineMS: j.req.DeadlineMS,
			Models: j.models, Attempts: j.attempts, BatchKey: j.key, EstimatedCost: j.estimate,
			Running: true, Worker: w.id, RunTime: s.now - j.start, AtStepBoundary: s.now >= j.start+j.load,
		})
	}
	slices.SortFunc(out, func(a, b decision.JobView) int { return cmpU64(a.Seq, b.Seq) })
	return out
}

// stop ends w's running attempt for a preemption, as Dispatcher.preempted
// and job.Store.Preempt do: the running job, and the members of its batch
// that had not started, go back to the queue at their places (their
// arrival order; no attempt is spent) and start over, the work done lost.
// Members that finished before it stay done. The models stay resident and
// unpinned, except those still loading, which are dropped as a cancelled
// load is live.
func (s *simulator) stop(w *simWorker) {
	d := s.devices[w.dev]
	lead := w.batch[0]
	cur := s.current(w)
	k := slices.Index(w.batch, cur)
	if lead.shared > 1 {
		k = 0
	}
	done, back := w.batch[:k], w.batch[k:]
	for _, j := range done {
		j.state = jobDone
	}
	s.observeCanary(w.id, done)
	s.preemptions++
	s.preemptedWork += s.now - cur.start
	// The device computed until now, not until the planned end.
	for i := w.busy[0]; i < w.busy[1]; i++ {
		iv := &d.busy[i]
		iv.to = max(min(iv.to, s.now), iv.from)
	}
	loading := s.now < lead.start+lead.load
	s.release(w)
	if loading {
		for _, m := range w.loaded {
			if r, ok := w.resident[m]; ok && r.pins == 0 {
				d.ledger.Release(r.res)
				delete(w.resident, m)
			}
		}
	}
	for _, j := range back {
		j.start, j.done, j.load, j.compute, j.loads, j.shared, j.device = 0, 0, 0, 0, 0, 0, 0
		s.enqueue(j)
	}
	w.batch, w.busyUntil, w.loaded = nil, s.now, nil
	w.run++ // its completion event no longer ends anything
	s.blocked = false
}
