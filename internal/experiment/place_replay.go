package experiment

import (
	"slices"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// placeReplayMetric names the placement replay's comparison.
const placeReplayMetric = "replay_place_s"

// placementReplay is a balancing experiment's replay: every placement the
// node makes while the experiment runs is also asked of both arms'
// policies, over the whole node's workers as they are at that moment, and
// each answer is priced on the worker it names: the worker's expected
// wait, the loads of the job's models it lacks, at the load costs the
// views carry, the reload of what those loads push out of the device, and
// the wait for VRAM that running jobs hold (placementPrice). Both arms
// answer the same job in the same state, so the difference between the
// two prices is the policies' alone: no burst, no queue and no split of
// the node between them.
//
// It is what the cache replay is to eviction (RATIONALE.md, "Balancing:
// the placement replay"): a split by traffic shares every worker and
// cache between the arms, and a split by devices gives each arm half a
// node, where crowding one device of two is not crowding one of four;
// here each policy decides for the whole node, as it would once promoted.
// What it cannot see is feedback: the state the next job meets is the
// one the real placements made, so a policy that pays now to keep a
// worker warm for later jobs is charged only for the payment. The live
// metrics still gate.
//
// It implements Replay, so the controller tests its series as it tests
// the cache replay's.
type placementReplay struct {
	mu   sync.Mutex
	cost [2]time.Duration // per arm (a watch's: the old policy, the new), since the replay began
	// onClose, when set, stops the feeding (a watch's replay).
	onClose func()
}

func newPlacementReplay() *placementReplay { return &placementReplay{} }

// LoadTimes implements Replay: what each arm's answers would have cost,
// summed.
func (p *placementReplay) LoadTimes() (baseline, candidate time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cost[Baseline], p.cost[Candidate]
}

// Close implements Replay: a watch's replay stops being fed; an
// experiment's ends with its routing.
func (p *placementReplay) Close() error {
	if p.onClose != nil {
		p.onClose()
	}
	return nil
}

// add charges one placement's two answers.
func (p *placementReplay) add(j *decision.JobView, workers []decision.WorkerView, answers [2]string) {
	var price [2]time.Duration
	for arm, id := range answers {
		d, ok := placementPrice(j, workers, id)
		if !ok {
			return // an answer naming no worker of the list: nothing to price
		}
		price[arm] = d
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cost[Baseline] += price[Baseline]
	p.cost[Candidate] += price[Candidate]
}

// placementPrice is what placing j on worker id costs, in time: the
// worker's expected wait, then each of j's models it does not hold, at the
// job's load cost for it (from the fastest tier holding it) or, where the
// view has none, its bytes over the device's measured bandwidth; and the
// models the loads push out of the device. Bytes beyond the device's free
// VRAM must be evicted from it, and are charged as one reload over the
// device's bandwidth: a warm model evicted now is what a later job on that
// device loads again (the cascade that crowding one device starts). And
// when running jobs hold the room the loads need, the wait until the
// device's first busy worker finishes (heldWait). The compute itself costs
// the same wherever the job runs.
func placementPrice(j *decision.JobView, workers []decision.WorkerView, id string) (time.Duration, bool) {
	for i := range workers {
		w := &workers[i]
		if w.ID != id {
			continue
		}
		d := w.EstimatedWait
		var missing uint64
		for k, m := range j.Models {
			if _, ok := w.ResidentBytes(m); ok {
				continue
			}
			var b uint64
			if k < len(j.ModelBytes) {
				b = j.ModelBytes[k]
			}
			missing += b
			switch {
			case k < len(j.LoadCost) && j.LoadCost[k] > 0:
				d += j.LoadCost[k]
			case w.H2DBytesPerS > 0:
				d += bytesTime(b, w.H2DBytesPerS)
			}
		}
		if missing > w.FreeVRAM && w.H2DBytesPerS > 0 {
			d += bytesTime(missing-w.FreeVRAM, w.H2DBytesPerS)
		}
		d += heldWait(j, workers, w, missing)
		return d, true
	}
	return 0, false
}

// heldWait is how long j placed on w waits for VRAM that running jobs
// hold: when the loads need more than the device's free VRAM plus what its
// idle workers hold (which can be evicted now), the reservation fails as
// held (dispatch.ErrVRAMHeld) and the job goes back to the queue until a
// busy worker of the device finishes — at the soonest, the shortest of
// their expected waits. The models of a busy worker are taken as held:
// the view does not say which of them its job pinned.
func heldWait(j *decision.JobView, workers []decision.WorkerView, w *decision.WorkerView, missing uint64) time.Duration {
	if missing <= w.FreeVRAM {
		return 0
	}
	room := w.FreeVRAM
	wait := time.Duration(-1)
	for i := range workers {
		x := &workers[i]
		if x.Device != w.Device {
			continue
		}
		if !x.Idle {
			if wait < 0 || x.EstimatedWait < wait {
				wait = x.EstimatedWait
			}
			continue
		}
		for _, r := range x.Resident {
			if x.ID == w.ID && slices.Contains(j.Models, r.Model) {
				continue // the job's own models stay: it needs them
			}
			room += uint64(max(r.Bytes, 0))
		}
	}
	if missing <= room || wait < 0 {
		return 0
	}
	return wait
}

// bytesTime is the time n bytes take at rate bytes per second.
func bytesTime(n, rate uint64) time.Duration {
	return time.Duration(float64(n) / float64(rate) * float64(time.Second))
}

// replayPlacement asks both arms where j goes, over every worker of the
// node, and charges their answers to the placement replay. decided is the
// answer the real decision gave for arm (Production: neither arm's), over
// workers when full is true; it is reused rather than asked again, so a
// stateful policy (round-robin's turn) is asked once per job for its own
// decision. A policy that declines leaves the job out of the replay.
func (r *routing) replayPlacement(j *decision.JobView, all []decision.WorkerView, arm int, decided string, full bool) {
	p := r.placeRep
	if p == nil {
		return
	}
	var answers [2]string
	for a := range 2 {
		if a == arm && full {
			answers[a] = decided
			continue
		}
		id, ok := r.arms[a].Balancer().Place(*j, all)
		r.checkFault(a)
		if !ok {
			return
		}
		answers[a] = id
	}
	p.add(j, all, answers)
}

// watchPlacement is a watch's placement replay: while it is set, every
// placement made with no experiment running is also asked of from (the
// policy a hand-made change moved away from) and both answers are priced,
// the active policy's decision standing for the new one.
type watchPlacement struct {
	from *policy.Arm
	rep  *placementReplay
}

// ReplayPlacements starts the watch's replay of a balancing change made by
// hand: from now until the returned Replay is closed, each placement the
// router makes outside an experiment is priced under the active policy
// (the change's new one) and under from, asked the same question over the
// same workers. Its LoadTimes are the old policy's cost, then the new
// one's, as the watch reads every replay. A later call replaces an open
// replay, which then stops being fed.
func (rt *Router) ReplayPlacements(from *policy.Arm) Replay {
	p := newPlacementReplay()
	wp := &watchPlacement{from: from, rep: p}
	p.onClose = func() { rt.watchPlace.CompareAndSwap(wp, nil) }
	rt.watchPlace.Store(wp)
	return p
}

// observe prices one placement the active policy made (decided) against
// the old policy's answer to the same question.
func (wp *watchPlacement) observe(j *decision.JobView, workers []decision.WorkerView, decided string) {
	old, ok := wp.from.Balancer().Place(*j, workers)
	if !ok {
		return
	}
	wp.rep.add(j, workers, [2]string{old, decided})
}

// ReplayChange is ReplayPlacements for a watched balancing change, asking
// the version it moved from (c.FromArm). Nil when the change is of another
// kind or has no such arm (the watch then judges on the node's metrics
// alone). It takes no lock of the policy host: the watch is told of a
// change from the host's change hook, with that lock held.
func (rt *Router) ReplayChange(c WatchedChange) Replay {
	if rt == nil || c.Kind != abi.KindBalancing.String() || c.FromArm == nil || c.FromArm.Kind() != abi.KindBalancing {
		return nil
	}
	return rt.ReplayPlacements(c.FromArm)
}
