package dispatch

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/policy"
)

// Core is the dispatcher's decision logic with no goroutines, I/O or clock
// of its own: which job (or batch of jobs) runs next and where, which
// resident models make room for a load, and which models the queue head
// wants pulled up the tiers. The live Dispatcher calls it from its dispatch
// loop; the simulator (internal/sim) calls the same methods from its event
// loop in virtual time, so a policy judged in the simulator is judged on
// the code that runs live.
//
// Every input is a snapshot the caller takes (views, ledgers, entry lists),
// and every time the policies read is already inside those views (ages,
// last uses), so a Core is deterministic for a given sequence of calls.
//
//	core := dispatch.Core{Scheduler: s, Balancer: b, Evictor: e, Batcher: bt}
//	dec, ok := core.Choose(queued, workers)
//	for _, f := range dec.Unfit { fail(f.JobID, f.Err) }
//	if ok { start(dec.Jobs, dec.Worker) }
type Core struct {
	Scheduler decision.Scheduler
	Balancer  decision.Balancer
	Evictor   decision.Evictor
	// Batcher groups jobs with the lead; nil runs every job alone.
	Batcher decision.Batcher
	// MaxEvictionRounds bounds the evict-and-retry rounds of one
	// reservation; 0 means DefaultEvictionRounds.
	MaxEvictionRounds int
}

// DefaultEvictionRounds is how many times a reservation asks the evictor
// again when the victims it named did not free enough (entries changed, or
// the policy under-counted) before it waits for running jobs instead.
const DefaultEvictionRounds = 9

// withDefaults fills the nil policies with the native builds of the
// fallback built-ins (policy.Native): the kernel keeps no hand-written
// copy of a policy.
func (c Core) withDefaults() Core {
	if c.Scheduler == nil {
		c.Scheduler = policy.Native().Scheduler()
	}
	if c.Balancer == nil {
		c.Balancer = policy.Native().Balancer()
	}
	if c.Evictor == nil {
		c.Evictor = policy.Native().NewEvictor()
	}
	if c.Batcher == nil {
		c.Batcher = policy.Native().Batcher()
	}
	if c.MaxEvictionRounds <= 0 {
		c.MaxEvictionRounds = DefaultEvictionRounds
	}
	return c
}

// Unfit is a queued job that no device of the node could ever hold: the
// caller fails it.
type Unfit struct {
	JobID string
	Err   *NoRoomError
}

// Decision is one dispatch: Jobs run on Worker, Jobs[0] (the lead, the
// scheduler's pick) first and the others, which share its BatchKey, right
// after it with the models still warm (protocol v1 runs one job per run
// message; see RATIONALE.md).
type Decision struct {
	Jobs   []string
	Worker string
	// Unfit lists jobs set aside for good while choosing; the caller fails
	// them whether or not a dispatch was found.
	Unfit []Unfit
	// SchedulerFault is set when the scheduler named a job it was not
	// shown; nothing is dispatched this round.
	SchedulerFault error
	// BatchFault is set when the batcher's answer was invalid (a job that
	// is not queued, a repeat, a different batch key) and the lead runs
	// alone.
	BatchFault error
}

// Choose asks the scheduler for a job, the balancer for its worker and the
// batcher for the jobs that run with it. A job the balancer cannot place
// now is set aside for this round and the scheduler asked again, so that
// one unplaceable job does not block the queue behind it. ok is false when
// nothing can start now.
func (c Core) Choose(queued []decision.JobView, workers []decision.WorkerView) (dec Decision, ok bool) {
	c = c.withDefaults()
	var maxUsable uint64
	for _, w := range workers {
		maxUsable = max(maxUsable, w.UsableVRAM)
	}
	cands := queued
	for len(cands) > 0 {
		id, ok := c.Scheduler.Next(cands, workers)
		if !ok {
			return dec, false
		}
		i := slices.IndexFunc(cands, func(j decision.JobView) bool { return j.ID == id })
		if i < 0 {
			// A scheduler that names a job it was not shown is faulty;
			// dispatching nothing this round is the safe answer.
			dec.SchedulerFault = fmt.Errorf("scheduler chose %q, which is not queued", id)
			return dec, false
		}
		jv := cands[i]
		if maxUsable > 0 && jv.EstimatedVRAM > maxUsable {
			dec.Unfit = append(dec.Unfit, Unfit{JobID: jv.ID, Err: &NoRoomError{Device: -1, Need: jv.EstimatedVRAM, Usable: maxUsable}})
		} else if wid, ok := c.Balancer.Place(jv, workers); ok && idle(workers, wid) {
			dec.Worker = wid
			dec.Jobs, dec.BatchFault = c.batch(jv, cands, workers)
			return dec, true
		}
		cands = slices.Delete(slices.Clone(cands), i, i+1)
	}
	return dec, false
}

func idle(workers []decision.WorkerView, id string) bool {
	i := slices.IndexFunc(workers, func(w decision.WorkerView) bool { return w.ID == id })
	return i >= 0 && workers[i].Idle
}

// batch asks the batcher for lead's company among cands and checks its
// answer: lead first, then distinct queued jobs with lead's non-empty batch
// key. An invalid answer runs lead alone. The batcher's wait is not
// honoured: the dispatcher runs the batch it has rather than hold a worker
// idle (DESIGN §4.6 lets it), which keeps live and simulated runs free of
// timers.
func (c Core) batch(lead decision.JobView, cands []decision.JobView, workers []decision.WorkerView) ([]string, error) {
	alone := []string{lead.ID}
	if lead.BatchKey == "" {
		return alone, nil
	}
	// A valid batch holds only jobs with the lead's key: without another
	// one queued the answer is known, and the policy call (which copies
	// the whole queue into its input) is spared.
	company := false
	for i := range cands {
		if cands[i].BatchKey == lead.BatchKey && cands[i].ID != lead.ID {
			company = true
			break
		}
	}
	if !company {
		return alone, nil
	}
	ids, _ := c.Batcher.Batch(lead, cands, workers)
	if len(ids) <= 1 {
		return alone, nil
	}
	if ids[0] != lead.ID {
		return alone, fmt.Errorf("batcher put %q before the lead %q", ids[0], lead.ID)
	}
	seen := map[string]bool{lead.ID: true}
	for _, id := range ids[1:] {
		i := slices.IndexFunc(cands, func(j decision.JobView) bool { return j.ID == id })
		switch {
		case seen[id]:
			return alone, fmt.Errorf("batcher named %q twice", id)
		case i < 0:
			return alone, fmt.Errorf("batcher named %q, which is not queued", id)
		case cands[i].BatchKey != lead.BatchKey:
			return alone, fmt.Errorf("batcher grouped %q with %q across batch keys", id, lead.ID)
		}
		seen[id] = true
	}
	return slices.Clone(ids), nil
}

// BatchKey is the batch key of a job that needs models: jobs with the same
// set of models may run as one batch on one worker, because the second and
// later ones find every model warm. A job without models does not batch.
func BatchKey(models []string) string {
	if len(models) == 0 {
		return ""
	}
	s := slices.Clone(models)
	sort.Strings(s)
	s = slices.Compact(s)
	return strings.Join(s, "\x00")
}

// LookaheadModels returns the distinct models of the first n queued jobs,
// in queue order: what the dispatcher starts climbing the tiers while those
// jobs wait.
func LookaheadModels(queued []decision.JobView, n int) []string {
	seen := map[string]bool{}
	var ids []string
	for _, j := range queued[:min(n, len(queued))] {
		for _, m := range j.Models {
			if !seen[m] {
				seen[m] = true
				ids = append(ids, m)
			}
		}
	}
	return ids
}

// ErrVRAMHeld is returned (wrapped) by Room.Reserve when the bytes a load
// needs are held by running jobs' pins: the caller waits for an unpin and
// tries again.
var ErrVRAMHeld = errors.New("vram held by running jobs")

// Room is one device's VRAM as a reservation sees it: the ledger, and the
// models resident on the device's workers that may be evicted.
type Room struct {
	Device int
	Ledger *device.Ledger
	// List returns the device's resident models in a stable order (sort
	// with SortEntries) and the bytes of the pinned ones.
	List func() (entries []decision.EntryView, pinnedBytes uint64)
	// Evict unloads entries[i] of the last List and releases its VRAM on
	// the ledger; it must leave an entry that was pinned since alone.
	Evict func(i int)
}

// Reserve takes bytes of VRAM for owner's model on the room's ledger,
// evicting unpinned models through the evictor when the ledger refuses. It
// returns a *NoRoomError when the model can never fit on the device, and an
// error wrapping ErrVRAMHeld when only pinned models stand in the way.
//
// The kernel never waits on a policy: when the evictor's answer (invalid,
// empty or too small) would leave the load waiting although evicting
// unpinned models could make the room, the native LRU answers for that
// round. The WASM adapters count such an answer as a stall fault before it
// gets here (internal/policy, FaultStall); this is the floor under every
// Evictor, whoever wrote it.
func (c Core) Reserve(r Room, owner, model string, bytes uint64) (*device.Reservation, error) {
	c = c.withDefaults()
	for attempt := 0; ; attempt++ {
		res, err := r.Ledger.Reserve(owner, model, bytes)
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, device.ErrInsufficientVRAM) {
			return nil, err
		}
		if bytes > r.Ledger.Usable() {
			return nil, &NoRoomError{Device: r.Device, Need: bytes, Usable: r.Ledger.Usable()}
		}
		entries, pinnedBytes := r.List()
		need := bytes - min(bytes, r.Ledger.Free())
		var unpinned uint64
		for i := range entries {
			if !entries[i].Pinned {
				unpinned += entries[i].Bytes
			}
		}
		victims := c.Evictor.Victims(need, entries)
		if unpinned >= need && covered(victims, entries) < need {
			victims = policy.Native().NewEvictor().Victims(need, entries)
		}
		if covered(victims, entries) == 0 || attempt >= c.MaxEvictionRounds {
			if pinnedBytes == 0 && attempt >= c.MaxEvictionRounds {
				return nil, &NoRoomError{Device: r.Device, Need: bytes, Usable: r.Ledger.Usable()}
			}
			return nil, fmt.Errorf("device %d: waiting for %s of VRAM: %w", r.Device, human(bytes), ErrVRAMHeld)
		}
		for _, i := range victims {
			r.Evict(i)
		}
	}
}

// covered returns the bytes victims would free, or 0 when the answer is
// invalid (an index out of range, a pinned entry, a repeat): an invalid
// answer is not carried out at all.
func covered(victims []int, entries []decision.EntryView) uint64 {
	var freed uint64
	seen := make(map[int]bool, len(victims))
	for _, i := range victims {
		if i < 0 || i >= len(entries) || entries[i].Pinned || seen[i] {
			return 0
		}
		seen[i] = true
		freed += entries[i].Bytes
	}
	return freed
}

// SortEntries sorts a device's entries by worker, then model, and keys with
// them: map iteration order is random and policies deserve a stable input.
func SortEntries[K any](entries []decision.EntryView, keys []K) {
	idx := make([]int, len(entries))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		x, y := entries[idx[a]], entries[idx[b]]
		if x.Worker != y.Worker {
			return x.Worker < y.Worker
		}
		return x.Model < y.Model
	})
	se := make([]decision.EntryView, len(entries))
	sk := make([]K, len(keys))
	for i, j := range idx {
		se[i] = entries[j]
		if j < len(keys) {
			sk[i] = keys[j]
		}
	}
	copy(entries, se)
	copy(keys, sk)
}

// PrefetchRoom is what the lookahead knows of the cache it fills.
type PrefetchRoom struct {
	// Free is the room the cache can give the lookahead's models: its
	// capacity, since the cache evicts through its own policy to make
	// room. Lookahead takes the bytes of the models it holds already off.
	Free uint64
	// Entries are what the cache holds, nil when unknown.
	Entries []decision.EntryView
	// Cached reports a model the cache holds already; nil knows none.
	Cached func(model string) bool
}

// Lookahead returns the models of the first n queued jobs to start
// climbing the tiers now. An Evictor that is a Prefetcher chooses among
// those the cache does not hold, for the room left once those it does hold
// are counted: a budget, so that a lookahead never evicts its own earlier
// prefetches. The models it holds come first in the answer (pulling them
// costs no transfer and keeps them warm), then the policy's choice. Any
// other Evictor gets LookaheadModels, every model of those jobs. Names the
// policy makes up, or repeats, are dropped: a prefetch is a hint and a
// wrong one must cost nothing but the call.
//
// The sizes the policy sees are the models' VRAM footprints (JobView
// ModelBytes), which stand in for their bytes in the cache.
func (c Core) Lookahead(queued []decision.JobView, n int, room PrefetchRoom) []string {
	c = c.withDefaults()
	all := LookaheadModels(queued, n)
	p, ok := c.Evictor.(decision.Prefetcher)
	if !ok || len(all) == 0 {
		return all
	}
	size := map[string]uint64{}
	waits := map[string]int{}
	for _, j := range queued[:min(n, len(queued))] {
		seen := map[string]bool{}
		for k, m := range j.Models {
			if k < len(j.ModelBytes) {
				size[m] = max(size[m], j.ModelBytes[k])
			}
			if !seen[m] {
				seen[m] = true
				waits[m]++
			}
		}
	}
	var out, wanted []string
	var bytes []uint64
	var waiting []int
	free := room.Free
	for _, m := range all {
		if room.Cached != nil && room.Cached(m) {
			out = append(out, m)
			free -= min(free, size[m])
			continue
		}
		wanted = append(wanted, m)
		bytes = append(bytes, size[m])
		waiting = append(waiting, waits[m])
	}
	if len(wanted) == 0 {
		return out
	}
	taken := map[string]bool{}
	for _, m := range p.PrefetchIDs(free, room.Entries, wanted, bytes, waiting) {
		if slices.Contains(wanted, m) && !taken[m] {
			taken[m] = true
			out = append(out, m)
		}
	}
	return out
}

// PreemptMaxStarts is the last start of a job in which it may be preempted:
// from its fourth start on it runs to its end. A preemption throws the
// attempt's work away, so without a bound a scheduler that stops a job for
// a waiting one and then dispatches the stopped job again (each answer
// valid on its own) would restart it every minRun for ever, and neither
// job would finish (issue 21: no decision may leave work unable to
// progress); so would a steady stream of interactive jobs under priority.
const PreemptMaxStarts = 3

// Preemption is a running job to stop and give back to the queue so that a
// waiting job of a higher class takes its worker.
type Preemption struct {
	JobID  string // the running job
	Worker string // its worker
	For    string // the queued job it makes way for
}

// Preempt asks a Planner scheduler whether a running job should make way
// for a queued one. The Core enforces its own rules whatever the policy
// answers, because a preemption throws work away:
//
//   - only when no worker is idle (an idle worker is the cheaper answer);
//   - only running jobs that have run for at least minRun in their current
//     attempt are shown and may be named, which bounds each job to one
//     preemption per minRun of its run time and guarantees it progress;
//   - only a job of a lower class than the queued job it makes way for
//     (the first of the plan), never one of the same or a higher class,
//     and never for a job that no worker's device could hold;
//   - at most one per call: the caller asks again once the worker is free;
//   - only in a job's first PreemptMaxStarts starts (decision.JobView's
//     Attempts), so that every job finishes whatever the policy plans.
//
// A scheduler that does not plan, or a plan without preemptions, preempts
// nothing. fault is set when the plan names jobs it was not shown.
func (c Core) Preempt(queued, running []decision.JobView, workers []decision.WorkerView, minRun time.Duration) (p Preemption, ok bool, fault error) {
	c = c.withDefaults()
	planner, isPlanner := c.Scheduler.(decision.Planner)
	if !isPlanner || len(queued) == 0 || slices.ContainsFunc(workers, func(w decision.WorkerView) bool { return w.Idle }) {
		return p, false, nil
	}
	// A job that no device can hold is failed, not run, once a worker is
	// free: stopping another job for it would only throw work away.
	var maxUsable uint64
	for _, w := range workers {
		maxUsable = max(maxUsable, w.UsableVRAM)
	}
	fits := func(j decision.JobView) bool { return maxUsable == 0 || j.EstimatedVRAM <= maxUsable }
	best := -1
	for _, j := range queued {
		if fits(j) && (best < 0 || j.ClassRank() < best) {
			best = j.ClassRank()
		}
	}
	if best < 0 {
		return p, false, nil
	}
	// Only jobs that could ever be preempted go to the policy: shorter
	// inputs, and no answer the Core would have to refuse for a job the
	// policy could have passed over for another.
	var cands []decision.JobView
	for _, r := range running {
		if r.ClassRank() > best && r.RunTime >= minRun && r.Attempts <= PreemptMaxStarts {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		return p, false, nil
	}
	next, preempt := planner.PlanIDs(queued, cands, workers)
	if len(preempt) == 0 {
		return p, false, nil
	}
	if len(next) == 0 {
		return p, false, fmt.Errorf("scheduler preempted %v for no queued job", preempt)
	}
	qi := slices.IndexFunc(queued, func(j decision.JobView) bool { return j.ID == next[0] })
	if qi < 0 {
		return p, false, fmt.Errorf("scheduler planned %q first, which is not queued", next[0])
	}
	if !fits(queued[qi]) {
		return p, false, nil
	}
	for _, id := range preempt {
		ri := slices.IndexFunc(cands, func(j decision.JobView) bool { return j.ID == id })
		if ri < 0 {
			return p, false, fmt.Errorf("scheduler preempted %q, which is not a preemptible running job", id)
		}
		if cands[ri].ClassRank() > queued[qi].ClassRank() {
			return Preemption{JobID: id, Worker: cands[ri].Worker, For: next[0]}, true, nil
		}
	}
	// Every named job is of the waiting job's class or higher: the plan
	// is valid but asks for what the Core never does.
	return p, false, nil
}
