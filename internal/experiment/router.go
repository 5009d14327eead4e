package experiment

import (
	"cmp"
	"hash/fnv"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Arm indices. Every pair in this package is [baseline, candidate];
// Production is the rest of the node during a canary step, which runs the
// active policies and is not counted.
const (
	Baseline   = 0
	Candidate  = 1
	Production = 2
)

var armNames = [2]string{"baseline", "candidate"}

// Policies are what a Router falls back to when no experiment runs: the
// host's adapters, which ask each kind's active policy.
type Policies struct {
	Scheduler decision.Scheduler
	Balancer  decision.Balancer
	Batcher   decision.Batcher
	Evictor   decision.Evictor
}

// Router is the dispatcher's Scheduler, Balancer, Batcher and Evictor. With
// no experiment running it hands every decision straight to the active
// policies (one atomic load of overhead). While one runs, it splits the
// node between the arms as the experiment's assignment says and asks each
// decision of the arm it belongs to.
//
// The split, for canaries and A/B tests:
//
//   - The candidate gets its share; the baseline arm gets an equal share
//     (or what is left, above 50%), and the rest of the node is
//     production: it runs the active policies and is not counted. Equal
//     arms matter because queueing is not linear: one worker at 85% load
//     waits far longer than seven at 85%, so a small canary compared with
//     the whole rest of the node would always look worse (Kayenta compares
//     a canary with a fresh baseline of the same size for this reason).
//   - Jobs belong to an arm (or production) in proportion to the shares,
//     stratified by class and models: each job, in the order the router
//     first sees it (queue order), goes to the group furthest behind its
//     share of the job's stratum (its class and models); among groups
//     within half a job of that, to the one furthest behind its share of
//     the class's estimated work (classWork); ties broken by the seed.
//     Both arms thus get the same mix of models, the same work and the
//     same bursts, which common random numbers show to cut the noise
//     between two small queues far below what independent coin flips (or
//     dealing jobs in turn) leave; the assignment is deterministic and
//     each arm's scheduler and batcher see only their own jobs.
//   - With unit workers, the workers are split into groups of the same
//     sizes (a seeded shuffle; new workers by hash): a job runs only on its
//     group, so the arms are small nodes that share only devices and host
//     tiers. With unit traffic, every worker serves every group.
//   - Each dispatch round serves the group furthest behind its share that
//     has queued jobs and (unit workers) an idle worker.
//
// For a switchback, every decision of a window goes to the window's arm;
// the arm of a job is the window's in which it was placed, and jobs placed
// during a window's burn-in are not counted.
type Router struct {
	base Policies
	cur  atomic.Pointer[routing]
	// watchPlace is an open watch's placement replay (ReplayPlacements).
	watchPlace atomic.Pointer[watchPlacement]
}

// Interface guards.
var (
	_ decision.Scheduler  = (*Router)(nil)
	_ decision.Balancer   = (*Router)(nil)
	_ decision.Batcher    = (*Router)(nil)
	_ decision.Evictor    = (*Router)(nil)
	_ decision.Planner    = (*Router)(nil)
	_ decision.Prefetcher = (*Router)(nil)
)

// NewRouter returns a router over the active policies.
func NewRouter(base Policies) *Router {
	if base.Scheduler == nil {
		base.Scheduler = policy.Native().Scheduler()
	}
	if base.Balancer == nil {
		base.Balancer = policy.Native().Balancer()
	}
	if base.Batcher == nil {
		base.Batcher = policy.Native().Batcher()
	}
	if base.Evictor == nil {
		base.Evictor = policy.Native().NewEvictor()
	}
	return &Router{base: base}
}

// routing is one experiment step's split. Its fields are fixed when it is
// made, except the counters and the switchback's attribution map.
type routing struct {
	kind    abi.Kind
	typ     Type
	unit    Unit
	seed    uint64
	share   float64    // the candidate's share of jobs, 0..1
	shares  [3]float64 // baseline, candidate, production
	arms    [2]*policy.Arm
	group   map[string]int // worker → arm or Production (unit workers)
	start   time.Time
	window  time.Duration
	burnIn  time.Duration
	windows []int // switchback: arm of window i, repeating
	now     func() time.Time
	// exp and step name the experiment and step this split belongs to
	// (Tag); follows is exp when the experiment runs on another node of
	// the cluster and this node only splits its own jobs for it (FollowRouting).
	exp     string
	step    int
	follows string

	dispatched [3]atomic.Int64
	onFault    func(arm int)
	faultsSeen [2]atomic.Int64

	mu      sync.Mutex
	assign  map[string]int8 // job → group (canary and A/B)
	byClass map[job.Class]*classWork
	// byModels counts each stratum's (class and models') jobs per group.
	byModels map[string]*[3]float64
	placed   map[string]placement // switchback: job → its window's arm
	tierAcc  *[2]tierCounts       // per-arm VRAM hits, misses, bytes at placement
	placeRep *placementReplay     // a balancing experiment's placement replay, if any
}

type placement struct {
	arm     int
	window  int
	discard bool
}

// tierCounts are what a placement tells about the VRAM tier: the job's
// models already resident on the chosen worker (hits) or to be loaded
// (misses, and their bytes).
type tierCounts struct {
	hits, misses, bytes int64
}

// set installs r (nil: no experiment).
func (rt *Router) set(r *routing) { rt.cur.Store(r) }

// Active reports whether an experiment is routing decisions.
func (rt *Router) Active() bool { return rt.cur.Load() != nil }

// jobArm is a job's arm, or Production (canary and A/B), assigning it on
// first sight. ok is false for a job never assigned when assign is false.
func (r *routing) jobArm(j *decision.JobView) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jobArmLocked(j)
}

// jobArmLocked is jobArm with r.mu held.
func (r *routing) jobArmLocked(j *decision.JobView) int {
	if g, ok := r.assign[j.ID]; ok {
		return int(g)
	}
	if len(r.assign) >= maxAssigned {
		// Jobs that finished unseen (cancelled) must not grow the map
		// without bound; forgetting reassigns the few still queued.
		clear(r.assign)
	}
	acc := r.byClass[j.Class]
	if acc == nil {
		acc = &classWork{}
		r.byClass[j.Class] = acc
	}
	w := acc.weight(j.EstimatedCost)
	var total float64
	for _, c := range acc.work {
		total += c
	}
	// First the stratum (class and models): the group furthest behind its
	// share of the stratum's jobs; among groups within half a job of that,
	// the one furthest behind its share of the class's work.
	key := string(j.Class) + "\x00" + j.BatchKey
	cnt := r.byModels[key]
	if cnt == nil {
		if len(r.byModels) >= maxAssigned {
			clear(r.byModels)
		}
		cnt = new([3]float64)
		r.byModels[key] = cnt
	}
	var n float64
	for _, c := range cnt {
		n += c
	}
	var defN, defW [3]float64
	maxN := math.Inf(-1)
	for g := range 3 {
		if r.shares[g] <= 0 {
			continue
		}
		defN[g] = r.shares[g]*(n+1) - cnt[g]
		defW[g] = r.shares[g]*(total+w) - acc.work[g]
		maxN = max(maxN, defN[g])
	}
	best, bestDef := -1, 0.0
	// The seed picks which group wins a tie, per class.
	first := int(hashUnit(r.seed, string(j.Class)) * 3)
	for k := range 3 {
		g := (first + k) % 3
		if r.shares[g] <= 0 || defN[g] < maxN-0.5 {
			continue
		}
		if best < 0 || defW[g] > bestDef+1e-12 {
			best, bestDef = g, defW[g]
		}
	}
	cnt[best]++
	acc.work[best] += w
	r.assign[j.ID] = int8(best)
	return best
}

// classWork is one class's estimated work assigned to each group, in
// seconds of run time once the models are in (JobView.EstimatedCost).
//
// # Why work and not jobs
//
// Two arms that get the same number of jobs still get different work:
// one draws more of the long models, and under load its backlog, and with
// it every later job's wait, drifts away from the other arm's like a
// random walk. On bursty traffic at 0.9 of capacity that drift, not the
// policies, was most of the difference between the arms of an A/A canary
// (RATIONALE.md). Balancing the estimated run time keeps the arms'
// offered work within one job of their shares, so the backlogs differ
// only by what the policies do. The estimate is the cost model's, the
// same for either arm, and excludes model loads: those are what eviction
// and balancing policies change, so they must stay in the outcome.
type classWork struct {
	work [3]float64
	// seen and sum give the class's mean estimate, the weight of a job
	// without one (a new model the cost model cannot price yet).
	seen int
	sum  float64
}

// weight is the work a job brings: its estimate in seconds, else the
// class's mean so far, else one (counting jobs).
func (c *classWork) weight(est time.Duration) float64 {
	if est > 0 {
		s := est.Seconds()
		c.seen++
		c.sum += s
		return s
	}
	if c.seen > 0 {
		return c.sum / float64(c.seen)
	}
	return 1
}

// assigned is the group of a job already assigned.
func (r *routing) assigned(id string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g, ok := r.assign[id]
	if ok {
		delete(r.assign, id)
	}
	return int(g), ok
}

// maxAssigned bounds the assignment map.
const maxAssigned = 1 << 17

func pickShare(u float64, shares [3]float64) int {
	switch {
	case u < shares[Candidate]:
		return Candidate
	case u < shares[Candidate]+shares[Baseline]:
		return Baseline
	case shares[Production] > 0:
		return Production
	case shares[Baseline] > 0:
		return Baseline
	}
	return Candidate
}

// hashUnit maps (seed, s) to [0, 1) uniformly.
func hashUnit(seed uint64, s string) float64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range b {
		b[i] = byte(seed >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(s))
	// FNV-1a leaves its high bits poorly mixed when inputs differ only in
	// their last bytes (j000001, j000002, ...); the splitmix64 finaliser
	// spreads every input bit over the whole word.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// workerArm is the group of worker id (unit workers).
func (r *routing) workerArm(id string) int {
	if a, ok := r.group[id]; ok {
		return a
	}
	// A worker that joined after the split (a restart gets a new ID only
	// if the pool names it anew): place it by hash, as the split would.
	return pickShare(hashUnit(r.seed^0x9e3779b97f4a7c15, id), r.shares)
}

// windowAt is the switchback window index and arm at t, and whether t is
// in the window's burn-in.
func (r *routing) windowAt(t time.Time) (idx, arm int, burn bool) {
	el := max(t.Sub(r.start), 0)
	idx = int(el / r.window)
	arm = r.windows[idx%len(r.windows)]
	return idx, arm, el-time.Duration(idx)*r.window < r.burnIn
}

func (r *routing) sched(arm int, base decision.Scheduler) decision.Scheduler {
	if r.kind == abi.KindScheduling && arm != Production {
		return r.arms[arm].Scheduler()
	}
	return base
}

func (r *routing) bal(arm int, base decision.Balancer) decision.Balancer {
	if r.kind == abi.KindBalancing && arm != Production {
		return r.arms[arm].Balancer()
	}
	return base
}

// checkFault tells the controller when an arm's version faulted since the
// last check; it is how a trapping candidate is rolled back at once.
func (r *routing) checkFault(arm int) {
	if r.onFault == nil || arm == Production || r.arms[arm] == nil {
		return
	}
	n := r.arms[arm].Faults()
	if old := r.faultsSeen[arm].Load(); n > old && r.faultsSeen[arm].CompareAndSwap(old, n) {
		r.onFault(arm)
	}
}

// order lists the groups to serve this round, the one furthest behind its
// share first (-1 for a group with no share).
func (r *routing) order() [3]int {
	out := [3]int{Candidate, Baseline, Production}
	lag := func(g int) float64 {
		if r.shares[g] <= 0 {
			return math.Inf(1)
		}
		return float64(r.dispatched[g].Load()) / r.shares[g]
	}
	slices.SortStableFunc(out[:], func(a, b int) int {
		la, lb := lag(a), lag(b)
		switch {
		case la < lb:
			return -1
		case la > lb:
			return 1
		}
		return 0
	})
	for i, g := range out {
		if r.shares[g] <= 0 {
			out[i] = -1
		}
	}
	return out
}

// Next implements decision.Scheduler.
func (rt *Router) Next(queued []decision.JobView, workers []decision.WorkerView) (string, bool) {
	r := rt.nodeSplit()
	if r == nil {
		return rt.base.Scheduler.Next(queued, workers)
	}
	if r.typ == Switchback {
		_, arm, _ := r.windowAt(r.now())
		id, ok := r.sched(arm, rt.base.Scheduler).Next(queued, workers)
		r.checkFault(arm)
		return id, ok
	}
	if r.unit == Traffic {
		return r.nextShared(rt.base.Scheduler, queued, workers)
	}
	for _, arm := range r.order() {
		if arm < 0 {
			continue
		}
		ws := workers
		if r.unit == Workers {
			ws = r.groupWorkers(arm, workers)
			if !anyIdle(ws) {
				continue
			}
		}
		js := r.armJobs(arm, queued)
		if len(js) == 0 {
			continue
		}
		id, ok := r.sched(arm, rt.base.Scheduler).Next(js, ws)
		r.checkFault(arm)
		if ok {
			return id, true
		}
	}
	return "", false
}

// nextShared is Next for unit traffic, where every group shares the
// workers and so must share one queue discipline: the active scheduler
// picks the job that gets the worker over the whole queue, which decides
// whose turn it is, and in a scheduling experiment that arm's scheduler
// then picks which of its own jobs takes the turn. Serving groups by a
// fixed share instead would make each a small queue of its own, whose
// backlog drains only at its share's pace: its latencies would depend on
// its luck with bursts more than on its policy.
func (r *routing) nextShared(base decision.Scheduler, queued []decision.JobView, workers []decision.WorkerView) (string, bool) {
	id, ok := base.Next(queued, workers)
	if !ok || r.kind != abi.KindScheduling {
		return id, ok
	}
	i := slices.IndexFunc(queued, func(j decision.JobView) bool { return j.ID == id })
	if i < 0 {
		return id, ok
	}
	arm := r.jobArm(&queued[i])
	if arm == Production {
		return id, ok
	}
	own, ok2 := r.arms[arm].Scheduler().Next(r.armJobs(arm, queued), workers)
	r.checkFault(arm)
	if !ok2 {
		return id, ok
	}
	return own, true
}

func anyIdle(ws []decision.WorkerView) bool {
	return slices.ContainsFunc(ws, func(w decision.WorkerView) bool { return w.Idle })
}

func (r *routing) groupWorkers(arm int, workers []decision.WorkerView) []decision.WorkerView {
	out := make([]decision.WorkerView, 0, len(workers))
	for _, w := range workers {
		if r.workerArm(w.ID) == arm {
			out = append(out, w)
		}
	}
	return out
}

func (r *routing) armJobs(arm int, queued []decision.JobView) []decision.JobView {
	out := make([]decision.JobView, 0, len(queued))
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range queued {
		if j := queued[i]; r.jobArmLocked(&j) == arm {
			out = append(out, j)
		}
	}
	return out
}

// Place implements decision.Balancer.
func (rt *Router) Place(j decision.JobView, workers []decision.WorkerView) (string, bool) {
	r := rt.nodeSplit()
	if r == nil {
		id, ok := rt.base.Balancer.Place(j, workers)
		if wp := rt.watchPlace.Load(); wp != nil && ok {
			wp.observe(&j, workers, id)
		}
		return id, ok
	}
	var arm, win int
	var burn bool
	all, full := workers, true
	if r.typ == Switchback {
		win, arm, burn = r.windowAt(r.now())
	} else {
		arm = r.jobArm(&j)
		if r.unit == Workers {
			workers, full = r.groupWorkers(arm, workers), false
		}
	}
	id, ok := r.bal(arm, rt.base.Balancer).Place(j, workers)
	r.checkFault(arm)
	if !ok {
		return "", false
	}
	r.dispatched[arm].Add(1)
	r.placedOn(j, arm, win, burn, workers, id)
	if !burn {
		r.replayPlacement(&j, all, arm, id, full)
	}
	return id, true
}

// placedOn records a placement: the switchback attribution, and the VRAM
// hits and misses the job will see on its worker.
func (r *routing) placedOn(j decision.JobView, arm, win int, burn bool, workers []decision.WorkerView, wid string) {
	var tc tierCounts
	if i := slices.IndexFunc(workers, func(w decision.WorkerView) bool { return w.ID == wid }); i >= 0 {
		for k, m := range j.Models {
			if _, ok := workers[i].ResidentBytes(m); ok {
				tc.hits++
			} else {
				tc.misses++
				if k < len(j.ModelBytes) {
					tc.bytes += int64(j.ModelBytes[k])
				}
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.typ == Switchback {
		if len(r.placed) > 1<<16 {
			// Jobs that never finished (cancelled before the hook saw
			// them) must not grow the map without bound.
			clear(r.placed)
		}
		r.placed[j.ID] = placement{arm: arm, window: win, discard: burn}
	}
	if r.tierAcc != nil && !burn && arm != Production {
		r.tierAcc[arm].hits += tc.hits
		r.tierAcc[arm].misses += tc.misses
		r.tierAcc[arm].bytes += tc.bytes
	}
}

// attribute returns the arm a finished job counts for, and false when it
// does not count (burn-in, or placed before this step).
func (r *routing) attribute(jobID, worker string) (placement, bool) {
	if r.typ == Switchback {
		r.mu.Lock()
		p, ok := r.placed[jobID]
		delete(r.placed, jobID)
		r.mu.Unlock()
		return p, ok && !p.discard
	}
	arm, ok := r.assigned(jobID)
	if !ok || arm == Production {
		return placement{arm: arm}, false
	}
	if r.unit == Workers && worker != "" && r.workerArm(worker) != arm {
		// Placed under another step's split: it ran on the other group.
		return placement{}, false
	}
	return placement{arm: arm}, true
}

// Batch implements decision.Batcher: a batch holds jobs of lead's arm only.
func (rt *Router) Batch(lead decision.JobView, queued []decision.JobView, workers []decision.WorkerView) ([]string, time.Duration) {
	r := rt.nodeSplit()
	if r == nil {
		return rt.base.Batcher.Batch(lead, queued, workers)
	}
	var arm, win int
	var burn bool
	if r.typ == Switchback {
		win, arm, burn = r.windowAt(r.now())
	} else {
		arm = r.jobArm(&lead)
		queued = r.armJobs(arm, queued)
		if r.unit == Workers {
			workers = r.groupWorkers(arm, workers)
		}
	}
	b := rt.base.Batcher
	if r.kind == abi.KindBatching && arm != Production {
		b = r.arms[arm].Batcher()
	}
	ids, wait := b.Batch(lead, queued, workers)
	r.checkFault(arm)
	if r.typ == Switchback && len(ids) > 1 {
		// The followers run on the lead's worker without a placement of
		// their own; they count for the same window.
		r.mu.Lock()
		for _, id := range ids[1:] {
			r.placed[id] = placement{arm: arm, window: win, discard: burn}
		}
		r.mu.Unlock()
	}
	return ids, wait
}

// Victims implements decision.Evictor for the devices' VRAM (the host
// tiers have evictors of their own). An eviction switchback asks the
// window's arm; an eviction experiment by workers asks the arm whose
// devices hold the entries, since each call is one device's VRAM and the
// split gives each arm whole devices; otherwise the active policy answers.
func (rt *Router) Victims(need uint64, entries []decision.EntryView) []int {
	r := rt.cur.Load()
	if r == nil || r.kind != abi.KindEviction {
		return rt.base.Evictor.Victims(need, entries)
	}
	arm := Production
	switch {
	case r.typ == Switchback:
		_, arm, _ = r.windowAt(r.now())
	case r.unit == Workers:
		arm = r.cacheArm(entries)
	}
	if arm == Production {
		return rt.base.Evictor.Victims(need, entries)
	}
	v := r.arms[arm].Evictor().Victims(need, entries)
	r.checkFault(arm)
	return v
}

// HostTier wraps a host tier's evictor (RAM, disk) so that an eviction
// experiment that has the whole node's caches to itself decides there too:
// a switchback's window hands the tier to the window's arm, and a device
// split's last step (100%: the node is the candidate's) to the candidate.
// Otherwise, and in every other experiment, base answers: the host tiers
// are shared by every device, so a split cannot give each arm its own.
// Without this, an eviction switchback compared only the devices' VRAM
// and left the tiers, where most of an eviction policy's load time is won
// or lost (a RAM tier holds tens of models, a device a few), to the
// active policy in both arms.
func (rt *Router) HostTier(base decision.Evictor) decision.Evictor {
	if base == nil {
		base = policy.Native().NewEvictor()
	}
	return &tierEvictor{rt: rt, base: base}
}

// tierEvictor is one host tier's evictor behind the router. Each arm gets
// an evictor of its own for the tier (tags and ghosts are per cache), made
// on the arm's first decision there and dropped with the experiment.
type tierEvictor struct {
	rt   *Router
	base decision.Evictor

	mu   sync.Mutex
	of   *routing
	arms [2]decision.Evictor
}

// Victims implements decision.Evictor.
func (t *tierEvictor) Victims(need uint64, entries []decision.EntryView) []int {
	r := t.rt.cur.Load()
	arm := r.wholeNodeArm()
	if arm == Production {
		return t.base.Victims(need, entries)
	}
	v := t.armEvictor(r, arm).Victims(need, entries)
	r.checkFault(arm)
	return v
}

// wholeNodeArm is the arm that decides for the caches every device shares
// (the host tiers, and what the lookahead prefetches into them): during an
// eviction experiment, a switchback's window's arm, or the candidate once
// a device split gives it the whole node; otherwise Production (the active
// policy). r may be nil.
func (r *routing) wholeNodeArm() int {
	switch {
	case r == nil || r.kind != abi.KindEviction:
		return Production
	case r.typ == Switchback:
		_, arm, _ := r.windowAt(r.now())
		return arm
	case r.shares[Candidate] >= 1:
		return Candidate
	}
	return Production
}

// armEvictor is arm's evictor for this tier under routing r.
func (t *tierEvictor) armEvictor(r *routing, arm int) decision.Evictor {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.of == nil || t.of.arms != r.arms {
		// Another experiment: its arms' versions start this tier afresh.
		t.of, t.arms = r, [2]decision.Evictor{}
	}
	if t.arms[arm] == nil {
		t.arms[arm] = r.arms[arm].NewEvictor()
	}
	return t.arms[arm]
}

// cacheArm is the group whose devices hold entries (one device's VRAM):
// the group of the first entry's worker. A device with nothing resident,
// or entries of a worker the split never saw (a restarted one), is left to
// the active policy: guessing by hash as workerArm does could hand one
// device's VRAM to two arms' evictors in turn.
func (r *routing) cacheArm(entries []decision.EntryView) int {
	for _, e := range entries {
		if g, ok := r.group[e.Worker]; ok {
			return g
		}
	}
	return Production
}

// splitDevices puts whole devices (groups of workers) in the arms, in a
// seeded shuffle: the candidate's until it has at least k workers, then
// about as many workers for the baseline, and the rest in production. Two
// arms sharing a device share its VRAM and its compute, so a policy's harm
// there would fall on both arms and cancel out of the comparison
// (RATIONALE.md, interference); a step's share therefore rounds up to whole
// devices. Below 100% at least one device is left to the baseline; with a
// single device the split falls back to single workers. With one worker
// per group this is the plain worker split: k workers, then min(k, n−k).
func splitDevices(devices [][]string, k int, seed uint64) map[string]int {
	n := 0
	for _, d := range devices {
		n += len(d)
	}
	if len(devices) < 2 && k < n {
		var single [][]string
		for _, d := range devices {
			for _, w := range d {
				single = append(single, []string{w})
			}
		}
		devices = single
	}
	devices = slices.Clone(devices)
	slices.SortFunc(devices, func(a, b []string) int {
		return cmp.Or(cmp.Compare(hashUnit(seed, a[0]), hashUnit(seed, b[0])), cmp.Compare(a[0], b[0]))
	})
	g := make(map[string]int, n)
	put := func(d []string, arm int) {
		for _, w := range d {
			g[w] = arm
		}
	}
	i, cand := 0, 0
	for ; i < len(devices) && cand < k; i++ {
		if k < n && i == len(devices)-1 {
			break // the baseline keeps a device
		}
		put(devices[i], Candidate)
		cand += len(devices[i])
	}
	for base := 0; i < len(devices) && base < cand; i++ {
		put(devices[i], Baseline)
		base += len(devices[i])
	}
	for ; i < len(devices); i++ {
		put(devices[i], Production)
	}
	return g
}

// armShares are the baseline, candidate and production shares for a
// candidate share p: the baseline gets as much as the candidate, or what is
// left above 50%.
func armShares(p float64) [3]float64 {
	p = min(max(p, 0), 1)
	b := min(p, 1-p)
	return [3]float64{b, p, max(1-p-b, 0)}
}

// groupSize is how many of n workers a canary step of pct percent gives the
// candidate: at least one, and at least one left to the baseline below 100.
func groupSize(n, pct int) int {
	if pct >= 100 {
		return n
	}
	k := int(math.Round(float64(n) * float64(pct) / 100))
	return min(max(k, 1), n-1)
}

// switchbackWindows is the arm sequence of a switchback: pairs of windows,
// each pair one baseline and one candidate window in a seeded order, so
// that the arms get equal time and neither always follows the other.
func switchbackWindows(seed uint64, pairs int) []int {
	out := make([]int, 0, 2*pairs)
	for i := range pairs {
		if hashUnit(seed, "window-pair-"+itoa(i)) < 0.5 {
			out = append(out, Baseline, Candidate)
		} else {
			out = append(out, Candidate, Baseline)
		}
	}
	return out
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}

// PlanIDs implements decision.Planner: the active scheduling policy's plan,
// preemptions included, when no experiment runs and that policy plans.
// While an experiment runs it plans nothing, so the dispatcher preempts
// nothing: a preemption takes a worker from whichever group holds it, at
// the word of one group's policy, and would move work between the arms
// that the comparison needs kept apart.
func (rt *Router) PlanIDs(queued, running []decision.JobView, workers []decision.WorkerView) (next, preempt []string) {
	p, ok := rt.base.Scheduler.(decision.Planner)
	if !ok || rt.nodeSplit() != nil {
		return nil, nil
	}
	return p.PlanIDs(queued, running, workers)
}

// PrefetchIDs implements decision.Prefetcher, with the evictor that
// Victims would ask (a switchback's window's arm during an eviction
// switchback). An evictor that does not choose prefetches gets every
// wanted model, which is what the dispatcher's lookahead does without a
// Prefetcher: the router must not change the node's behaviour by standing
// in between.
func (rt *Router) PrefetchIDs(free uint64, entries []decision.EntryView, wanted []string, wantedBytes []uint64, waiting []int) []string {
	r := rt.cur.Load()
	if arm := r.wholeNodeArm(); arm != Production {
		ids := r.arms[arm].Evictor().PrefetchIDs(free, entries, wanted, wantedBytes, waiting)
		r.checkFault(arm)
		return ids
	}
	if p, ok := rt.base.Evictor.(decision.Prefetcher); ok {
		return p.PrefetchIDs(free, entries, wanted, wantedBytes, waiting)
	}
	return slices.Clone(wanted)
}
