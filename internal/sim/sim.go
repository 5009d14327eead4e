package sim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/predict"
)

// epoch is virtual time zero. Policies see times relative to it only.
var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Run simulates the trace on the node described by cfg and returns the
// report. It is deterministic: the same inputs give the same report, except
// for the wall-time figures (sim_speedup, wall_s) taken from opts.Wall.
func Run(ctx context.Context, cfg Config, models []Model, trace *Trace, opts Options) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if trace == nil || len(trace.Requests) == 0 {
		return nil, errors.New("sim: empty trace")
	}
	wall := opts.Wall
	if wall == nil {
		wall = clock.Real()
	}
	s, err := newSimulator(ctx, cfg, models, trace, opts)
	if err != nil {
		return nil, err
	}
	defer s.host.Close()
	if s.watch != nil && s.watch.shadow != nil {
		defer s.watch.shadow.Close()
	}
	start := wall.Now()
	if err := s.run(ctx); err != nil {
		return nil, err
	}
	return s.report(wall.Since(start), opts.Seed), nil
}

// simulator is one run's state.
type simulator struct {
	// demand is the kernel's recent demand per model, as the live
	// dispatcher keeps it (internal/predict.Demand): each job counted at
	// its first start, with its submission time; the eviction entries
	// carry it.
	demand *predict.Demand
	cfg    Config
	opts   Options
	clk    *clock.Fake
	now    time.Duration
	host   *policy.Host
	core   dispatch.Core
	models map[string]Model
	sizes  []Model

	jobs    []*simJob
	byJobID map[string]*simJob
	// queues hold the queued jobs, interactive then batch, each in arrival
	// order, as the store's per-class indexes; head merges them as the
	// store's Window does.
	queues  [2][]*simJob
	events  eventHeap
	evSeq   uint64
	workers []*simWorker
	byID    map[string]*simWorker
	devices []*simDevice
	blocked bool // a job waits for VRAM held by running jobs: retry after a completion

	ram, disk *hostTier
	vram      TierStats
	remote    TierStats
	coldLoads int64
	loadTime  time.Duration
	uses      []use // every job start, for the offline optimum
	firstUse  map[string]bool

	// Lookahead (prefetch) state: one lookahead in flight at a time, as
	// the live dispatcher; inflight maps a model to the end of its
	// transfer; unused marks prefetched models no job has used yet, with
	// what the load would have cost without the prefetch.
	prefetching int
	inflight    map[string]time.Duration
	unused      map[string]time.Duration
	prefetch    PrefetchReport
	// pred is the predictor warming models no job has asked for yet
	// (Config.Predict, warm.go); nil when off.
	pred *predictState

	batches, batchedJobs int

	// Preemption (preempt.go): how many running jobs were stopped, the
	// worker time their lost attempts took, and the next poll due while a
	// preemption may become possible with no event to look again.
	preemptions   int
	preemptedWork time.Duration
	pollAt        time.Duration

	canary *canaryState // nil without Options.Canary
	watch  *watchState  // nil without Options.Watch (watch.go)

	// parts, set only on a cluster's merged figures (cluster.go), are its
	// nodes: the offline optimum is each node's, summed.
	parts []*simulator
	// incoming, in a cluster's node, are the jobs routed to it that have
	// not arrived yet (the network delay): its view counts them.
	incoming []*simJob
}

type simJob struct {
	id       string
	index    int // in the trace
	seq      uint64
	req      *Request
	models   []string // deduplicated
	key      string   // dispatch.BatchKey of models
	sizes    []uint64
	vram     uint64
	plan     dispatch.Plan // its stages (planJob): vram is their Peak
	work     cost.Work
	estimate time.Duration

	start, done time.Duration
	load        time.Duration
	compute     time.Duration
	loads       int
	device      int
	state       jobState
	shared      int // members of the fused batch it ran in (0 or 1: alone)
	// attempts counts the job's starts, as job.Job.Attempts: a preempted
	// job comes back with one more.
	attempts int
}

type jobState int

const (
	jobPending jobState = iota
	jobQueued
	jobRunning
	jobDone
	jobFailed
)

type resident struct {
	bytes    uint64
	res      *device.Reservation
	pins     int
	fresh    bool // reserved by the start in progress, not loaded yet
	lastUse  time.Duration
	inserted time.Duration
	hits     int
	loadCost time.Duration
	// kept counts the running batches that keep the model from a
	// finished stage (dispatch's residentModel.kept).
	kept int
}

type simWorker struct {
	id        string
	dev       int
	batch     []*simJob // running: the lead first
	busyUntil time.Duration
	resident  map[string]*resident
	// run numbers the worker's starts, so that the completion event of a
	// batch a preemption stopped is told from the current one's.
	run uint64
	// loaded are the models the running batch's start loaded, and busy
	// the [from, to) indices of its compute intervals in its device's
	// busy list: what a preemption takes back.
	loaded []string
	busy   [2]int
	// held are the models the running batch still pins (its last stage's
	// and those no stage released), act its stage's activations and ctx
	// the worker's context, held on the ledger as a live node holds them.
	held []string
	act  *device.Reservation
	ctx  *device.Reservation
	// kept are the finished stages' models the running batch keeps:
	// unpinned, evicted only when nothing else makes the room.
	kept []*resident
}

type simDevice struct {
	index   int
	cfg     device.SimDeviceConfig
	ledger  *device.Ledger
	cost    cost.Device
	workers []*simWorker
	busy    []interval // compute intervals, in start order
}

type interval struct{ from, to time.Duration }

// use is one job start, as the optimum replays it.
type use struct {
	device int
	worker string
	models []string
	cold   []bool // index for index: the model's first use on the node
	// coldCost is, for a first use, the load time the run charged: a
	// compulsory load whose price the tiers and the lookahead set, not
	// the VRAM eviction policy.
	coldCost []time.Duration
}

func newSimulator(ctx context.Context, cfg Config, models []Model, trace *Trace, opts Options) (*simulator, error) {
	s := newNodeState(cfg, models, clock.NewFake(epoch), opts)
	for i := range trace.Requests {
		j, err := s.newJob(i, &trace.Requests[i])
		if err != nil {
			return nil, err
		}
		s.jobs = append(s.jobs, j)
		s.byJobID[j.id] = j
		s.push(event{at: j.req.Time, kind: evArrive, job: j})
	}
	// A decision's deadline is wall time, by design (it bounds CPU spent in
	// a guest). The simulator judges what policies decide, not how fast a
	// busy machine runs them: with the live 50 ms a loaded machine made
	// WASM gdsf time out and the fallback answer, so the same run gave
	// another report. A generous deadline keeps runs reproducible and
	// still stops a guest that loops.
	pcfg := cfg.Policies
	pcfg.CallTimeout = max(pcfg.CallTimeout, simCallTimeout)
	host, err := policy.NewHost(pcfg, opts.Log, s.clk)
	if err != nil {
		return nil, fmt.Errorf("sim: policy host: %w", err)
	}
	// Built-ins compile to WASM in the background; wait so that every
	// decision of the run comes from the same build.
	if err := host.WaitReady(ctx); err != nil {
		host.Close()
		return nil, fmt.Errorf("sim: policy host: %w", err)
	}
	for _, m := range opts.Modules {
		if _, err := host.Load(ctx, m.Kind, m.Name, m.WASM, true, "sim"); err != nil {
			host.Close()
			return nil, fmt.Errorf("sim: load %s policy %s: %w", m.Kind, m.Name, err)
		}
	}
	if err := applyParams(host, cfg.Params); err != nil {
		host.Close()
		return nil, err
	}
	s.host = host
	// The live dispatcher's decision core, over the same policy adapters
	// a node gives it (internal/node).
	s.core = dispatch.Core{Scheduler: host.Scheduler(), Balancer: host.Balancer(), Evictor: host.Evictor(), Batcher: host.Batcher()}
	s.ram.onEvict, s.disk.onEvict = opts.OnEvict, opts.OnEvict
	if cfg.TierEvictor == nil {
		// As internal/node does, the host tiers evict through the active
		// eviction policy too, each through its own adapter (tags and
		// ghosts are per cache).
		s.disk.ev, s.ram.ev = host.NewEvictor(), host.NewEvictor()
	}
	if opts.Canary != nil {
		if err := s.startCanary(ctx, opts.Canary); err != nil {
			host.Close()
			return nil, err
		}
	}
	if err := s.startWatch(opts.Watch); err != nil {
		host.Close()
		return nil, err
	}
	return s, nil
}

// newNodeState builds a node's devices, workers and host tiers on clock
// clk, with no jobs and no policy host yet: newSimulator adds both for one
// node, newCluster (cluster.go) for each node of a cluster.
func newNodeState(cfg Config, models []Model, clk *clock.Fake, opts Options) *simulator {
	demand := predict.NewDemand()
	s := &simulator{
		demand:   demand,
		cfg:      cfg,
		opts:     opts,
		clk:      clk,
		models:   make(map[string]Model, len(models)),
		sizes:    slices.Clone(models),
		byID:     map[string]*simWorker{},
		byJobID:  map[string]*simJob{},
		ram:      newHostTier("ram", cfg.RAMBytes, cfg.RAMTargetFill, cfg.TierEvictor),
		disk:     newHostTier("disk", cfg.DiskBytes, cfg.DiskTargetFill, cfg.TierEvictor),
		firstUse: map[string]bool{},
		inflight: map[string]time.Duration{},
		unused:   map[string]time.Duration{},
		pred:     newPredictState(cfg.Predict),
	}
	s.ram.demand, s.disk.demand = demand, demand
	for _, m := range models {
		s.models[m.ID] = m
	}
	for i, dc := range cfg.Devices {
		name := dc.Name
		if name == "" {
			name = "sim-gpu-" + strconv.Itoa(i)
		}
		d := &simDevice{index: i, cfg: dc, ledger: device.NewLedger(dc.MemoryBytes, cfg.Headroom),
			cost: cost.Device{H2DBytesPerS: dc.H2DBytesPerS, ComputeFactor: dc.ComputeFactor}}
		d.cfg.Name = name
		for k := 0; k < cfg.WorkersPerDevice; k++ {
			w := &simWorker{id: fmt.Sprintf("w%d-%d", i, k), dev: i, resident: map[string]*resident{}}
			d.workers = append(d.workers, w)
			s.workers = append(s.workers, w)
			s.byID[w.id] = w
		}
		s.devices = append(s.devices, d)
	}
	return s
}

// newJob is request i of the trace as a job: its models deduplicated and
// sized, its batch key and its cost estimate.
func (s *simulator) newJob(i int, r *Request) (*simJob, error) {
	j := &simJob{id: fmt.Sprintf("j%06d", i), index: i, seq: uint64(i + 1), req: r}
	for _, m := range r.Models {
		if slices.Contains(j.models, m) {
			continue
		}
		mod, ok := s.models[m]
		if !ok {
			return nil, fmt.Errorf("sim: trace line %d: unknown model %q", r.Line, m)
		}
		j.models = append(j.models, m)
		b := uint64(cost.VRAMBytes(mod.Family, mod.Bytes))
		j.sizes = append(j.sizes, b)
	}
	j.key = dispatch.BatchKey(j.models)
	j.work = s.work(j)
	j.plan = s.planJob(j)
	j.vram = j.plan.Peak()
	j.estimate = s.cfg.Cost.JobEstimate(j.work, cost.Device{})
	return j, nil
}

// defaultSteps is the sampling of a request without a workflow.
const defaultSteps = dispatch.DefaultJobSteps

// work is the compute a job asks for, for the cost model: the same
// estimate the live dispatcher makes (dispatch.JobWork).
func (s *simulator) work(j *simJob) cost.Work {
	fams := make([]string, len(j.models))
	for i, id := range j.models {
		fams[i] = s.models[id].Family
	}
	known := func(f string) bool { _, ok := s.cfg.Cost.Lookup(f); return ok }
	return dispatch.JobWork(fams, j.req.Samplers, known)
}

// Events. At equal times, events run in the order they were scheduled.
type evKind int

const (
	evArrive evKind = iota
	evDone
	evPrefetched
	evPoll // a dispatch round with no other cause (preempt.go)
)

type event struct {
	at    time.Duration
	seq   uint64
	kind  evKind
	job   *simJob
	w     *simWorker
	run   uint64 // evDone: the worker's start it ends
	model string
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func (s *simulator) push(e event) {
	s.evSeq++
	e.seq = s.evSeq
	heap.Push(&s.events, e)
}

// advance moves virtual time, and the clock the policies read, to t. The
// clock is set to epoch+t rather than moved by the difference: in a
// cluster (cluster.go) every node shares one clock, which another node may
// already have moved there.
func (s *simulator) advance(t time.Duration) {
	if t > s.now {
		s.now = t
	}
	if d := epoch.Add(s.now).Sub(s.clk.Now()); d > 0 {
		s.clk.Advance(d)
	}
}

// run processes events until none are left: all events due at one instant
// first, then a dispatch round, as the live dispatcher wakes on each change.
func (s *simulator) run(ctx context.Context) error {
	for n := 0; s.events.Len() > 0; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		s.step()
	}
	s.drain()
	return nil
}

// step runs the events due at the earliest instant, then a dispatch round.
func (s *simulator) step() {
	t := s.events[0].at
	s.advance(t)
	for s.events.Len() > 0 && s.events[0].at == t {
		e := heap.Pop(&s.events).(event)
		switch e.kind {
		case evArrive:
			if i := slices.Index(s.incoming, e.job); i >= 0 {
				s.incoming = slices.Delete(s.incoming, i, i+1)
			}
			s.enqueue(e.job)
			s.observeArrival(e.job)
		case evDone:
			if e.run == e.w.run && e.w.batch != nil {
				s.finish(e.w)
			}
		case evPrefetched:
			s.prefetched(e.model)
		case evPoll:
			// Nothing but the round below.
		}
	}
	s.dispatch()
	s.tickCanary()
	s.tickWatch()
}

// drain ends a run whose events are all done.
func (s *simulator) drain() {
	for _, j := range s.head(0) {
		// Left behind: only possible when a job waits for VRAM that no
		// completion will free. Count it as failed rather than hang.
		j.state = jobFailed
	}
	s.queues = [2][]*simJob{}
	for m := range s.unused {
		// Prefetched and never used by the end of the run.
		s.prefetch.Wasted++
		s.prefetch.WastedBytes += s.models[m].Bytes
	}
}

// dispatch starts jobs while a worker is idle and jobs are queued, asking
// the live dispatcher's decision core (dispatch.Core.Choose) exactly as
// Dispatcher.dispatchReady does, then preempts and starts the lookahead, as
// a round of Dispatcher.Run. A preemption frees its worker at once, and the
// waiting job takes it in the same instant's next dispatch.
func (s *simulator) dispatch() {
	for {
		s.dispatchReady()
		if !s.preempt() {
			break
		}
	}
	s.lookahead()
	s.warmPredicted()
}

func (s *simulator) dispatchReady() {
	for !s.blocked && s.queued() > 0 && s.anyIdle() {
		dec, ok := s.core.Choose(s.queuedViews(s.cfg.QueueView), s.workerViews())
		for _, u := range dec.Unfit {
			j := s.byJobID[u.JobID]
			s.dequeue(j)
			j.state = jobFailed
		}
		if !ok {
			break
		}
		w := s.byID[dec.Worker]
		batch := make([]*simJob, 0, len(dec.Jobs))
		for _, id := range dec.Jobs {
			batch = append(batch, s.byJobID[id])
		}
		s.start(batch, w)
	}
}

func (s *simulator) anyIdle() bool {
	for _, w := range s.workers {
		if w.batch == nil {
			return true
		}
	}
	return false
}

func classIndex(c job.Class) int {
	if c == job.Interactive {
		return 0
	}
	return 1
}

func bySeq(q *simJob, seq uint64) int { return cmpU64(q.seq, seq) }

func (s *simulator) queued() int { return len(s.queues[0]) + len(s.queues[1]) }

// enqueue puts j into its class's queue at its arrival place (a job that
// goes back keeps its place, as in the store).
func (s *simulator) enqueue(j *simJob) {
	q := &s.queues[classIndex(j.req.Class)]
	i, _ := slices.BinarySearchFunc(*q, j.seq, bySeq)
	*q = slices.Insert(*q, i, j)
	j.state = jobQueued
}

func (s *simulator) dequeue(j *simJob) {
	q := &s.queues[classIndex(j.req.Class)]
	if i, ok := slices.BinarySearchFunc(*q, j.seq, bySeq); ok {
		*q = slices.Delete(*q, i, i+1)
	}
}

// head returns, of each class, up to perClass queued jobs (all when
// perClass ≤ 0), merged in arrival order across classes: the store's
// Window, which the live dispatcher's views follow. Traces carry no
// explicit orders, so queue order is arrival order.
func (s *simulator) head(perClass int) []*simJob {
	a, b := s.queues[0], s.queues[1]
	if perClass > 0 {
		a, b = a[:min(len(a), perClass)], b[:min(len(b), perClass)]
	}
	out := make([]*simJob, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && a[0].seq < b[0].seq) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// requeue puts jobs back into the queue at their places.
func (s *simulator) requeue(jobs []*simJob) {
	for _, j := range jobs {
		s.enqueue(j)
	}
}

// lookahead mirrors Dispatcher.lookahead: when no lookahead is in flight,
// the decision core (dispatch.Core.Lookahead) names the models of the
// first LookaheadJobs queued jobs to pull, the eviction policy's choice
// when it is a decision.Prefetcher (the policy host's always is) and every
// model otherwise, and those not in RAM start climbing to the RAM tier, in
// parallel, each arriving when its transfer from the tier that holds it
// would end. The room is the live one (Dispatcher.ramRoom): the tier's
// capacity, since the tier evicts through its own policy to make room, and
// no entries.
func (s *simulator) lookahead() {
	n := s.cfg.LookaheadJobs
	if n <= 0 || s.prefetching > 0 || s.queued() == 0 || s.cfg.NoRAMTier {
		return
	}
	room := dispatch.PrefetchRoom{Free: uint64(max(s.ram.capacity, 0)), Cached: s.ram.has}
	queued := decision.PlannedOrder(s.core.Scheduler, s.queuedViews(n), s.workerViews())
	for _, m := range s.core.Lookahead(queued, n, room) {
		if s.ram.has(m) {
			continue
		}
		if _, busy := s.inflight[m]; busy {
			continue
		}
		mod := s.models[m]
		if mod.Bytes > s.ram.capacity {
			continue // the tier skips what does not fit
		}
		var took time.Duration
		if s.disk.has(m) {
			took = s.cfg.Cost.DiskReadTime(mod.Bytes)
		} else {
			took = s.remoteTime(mod.Bytes) + s.cfg.Cost.DiskReadTime(mod.Bytes)
		}
		s.inflight[m] = s.now + took
		s.unused[m] = took
		s.prefetching++
		s.prefetch.Issued++
		s.prefetch.IssuedBytes += mod.Bytes
		s.push(event{at: s.now + took, kind: evPrefetched, model: m})
	}
}

// prefetched lands a lookahead transfer in the host tiers.
func (s *simulator) prefetched(m string) {
	s.prefetching--
	if _, ok := s.inflight[m]; !ok {
		return // a job's load took the transfer over and landed it
	}
	delete(s.inflight, m)
	if s.warmLanding(m) {
		return
	}
	mod := s.models[m]
	s.landPrefetch(m, mod)
}

// landPrefetch puts a prefetched model into the host tiers, each entry
// priced at what its promotion took (as internal/tier's store records it).
func (s *simulator) landPrefetch(m string, mod Model) {
	disk := s.cfg.Cost.DiskReadTime(mod.Bytes)
	if !s.disk.has(m) {
		s.remote.Hits++
		s.remote.Bytes += mod.Bytes
		remote := s.remoteTime(mod.Bytes)
		s.evicted(s.disk.insert(m, mod.Bytes, s.now, remote))
		disk += remote
	}
	s.evicted(s.ram.insert(m, mod.Bytes, s.now, disk))
}

// evicted books host-tier evictions of prefetched models no job used.
func (s *simulator) evicted(ids []string) {
	for _, m := range ids {
		s.warmEvicted(m)
		if _, ok := s.unused[m]; ok && !s.ram.has(m) {
			delete(s.unused, m)
			s.prefetch.Wasted++
			s.prefetch.WastedBytes += s.models[m].Bytes
		}
	}
}

// loadCost is what making model resident would cost now, from the fastest
// tier that holds it, at the cost model's bandwidths.
func (s *simulator) loadCost(id string, dev cost.Device) time.Duration {
	m := s.models[id]
	switch {
	case s.ram.has(id):
		return s.cfg.Cost.TransferTime(m.Bytes, dev)
	case s.disk.has(id):
		return s.cfg.Cost.LoadTime(m.Family, m.Bytes, dev)
	}
	return s.remoteTime(m.Bytes) + s.cfg.Cost.LoadTime(m.Family, m.Bytes, dev)
}

// remoteTime is reading bytes from the model source (L4) into L3.
func (s *simulator) remoteTime(bytes int64) time.Duration {
	return time.Duration(float64(bytes) / s.cfg.RemoteBytesPerS * s.cfg.Cost.TimeScale * float64(time.Second))
}

// queuedViews describes the queue's window as the live dispatcher's
// queuedViews does: each class's first perClass jobs, in arrival order
// across classes, with that place as Seq.
// simCallTimeout is the least per-decision deadline of the simulator's
// policy host (see newSimulator).
const simCallTimeout = time.Second

func (s *simulator) queuedViews(perClass int) []decision.JobView {
	head := s.head(perClass)
	out := make([]decision.JobView, 0, len(head))
	// Load costs depend only on the tiers' contents, which do not change
	// within one view: price each model once.
	costs := make(map[string]time.Duration, 16)
	total := 0
	for _, j := range head {
		total += len(j.models)
	}
	flat := make([]time.Duration, total)
	for k, j := range head {
		loads := flat[:len(j.models):len(j.models)]
		flat = flat[len(j.models):]
		for i, m := range j.models {
			c, ok := costs[m]
			if !ok {
				c = s.loadCost(m, cost.Device{})
				costs[m] = c
			}
			loads[i] = c
		}
		out = append(out, decision.JobView{
			ID: j.id, Class: j.req.Class, Seq: uint64(k) + 1, Age: s.now - j.req.Time, DeadlineMS: j.req.DeadlineMS,
			Models: j.models, Attempts: j.attempts, EstimatedVRAM: j.vram, ModelBytes: j.sizes, LoadCost: loads, EstimatedCost: j.estimate,
			BatchKey: j.key,
		})
	}
	return out
}

func (s *simulator) workerViews() []decision.WorkerView {
	out := make([]decision.WorkerView, 0, len(s.workers))
	for _, d := range s.devices {
		busy := 0
		for _, w := range d.workers {
			if w.batch != nil {
				busy++
			}
		}
		for _, w := range d.workers {
			res := make([]decision.ResidentModel, 0, len(w.resident))
			for m, r := range w.resident {
				if !r.fresh {
					res = append(res, decision.ResidentModel{Model: m, Bytes: int64(r.bytes)})
				}
			}
			slices.SortFunc(res, func(a, b decision.ResidentModel) int { return strings.Compare(a.Model, b.Model) })
			v := decision.WorkerView{
				ID: w.id, Device: d.index, Idle: w.batch == nil, DeviceBusy: busy, Resident: res,
				FreeVRAM: d.ledger.Free(), H2DBytesPerS: uint64(d.cfg.H2DBytesPerS),
				// As live: the workers' contexts are never room for a job.
				UsableVRAM: d.ledger.Usable() - min(d.ledger.Usable(), uint64(len(d.workers))*s.cfg.WorkerContextBytes),
			}
			if w.batch != nil {
				v.EstimatedWait = max(w.busyUntil-s.now, 0)
			}
			out = append(out, v)
		}
	}
	return out
}

// start makes the lead's models resident on w (the followers of a batch
// share its key, so its models) and schedules the batch's completion.
func (s *simulator) start(batch []*simJob, w *simWorker) {
	d := s.devices[w.dev]
	lead := batch[0]
	for _, j := range batch {
		s.dequeue(j)
	}
	// pinned are the models this start pins (warm or fresh) that it still
	// pins; fresh those it reserved; recs and hits the entries it made or
	// found, by model, so that a load is charged even when a later stage
	// evicted the model again.
	var pinned, fresh []string
	var kept []*resident // finished stages' models this start keeps
	recs, hits := map[string]*resident{}, map[string]*resident{}
	var act *device.Reservation
	busyFrom := len(d.busy)
	undo := func() {
		if act != nil {
			d.ledger.Release(act)
		}
		for _, m := range pinned {
			if r := w.resident[m]; r != nil {
				r.pins--
			}
		}
		for _, r := range kept {
			r.kept--
		}
		for _, m := range fresh {
			if r := w.resident[m]; r != nil && r == recs[m] {
				d.ledger.Release(r.res)
				delete(w.resident, m)
			}
		}
	}
	fail := func(err error) {
		undo()
		if errors.Is(err, dispatch.ErrVRAMHeld) {
			// Back into the queue in arrival order; retried after the
			// next completion frees pinned VRAM.
			s.requeue(batch)
			s.blocked = true
		} else {
			lead.state = jobFailed
			s.requeue(batch[1:])
		}
	}
	if w.ctx == nil && s.cfg.WorkerContextBytes > 0 {
		res, err := s.reserve(d, w, "(worker context)", s.cfg.WorkerContextBytes)
		if err != nil {
			fail(err)
			return
		}
		w.ctx = res
	}
	// The job's stages in order, as the live dispatcher moves through
	// them (dispatch.Plan.Step, jobHold.enter): each stage unpins what no
	// later stage needs but keeps it (evicted last, reserve), gives back
	// the previous stage's activations, and reserves its models and
	// activations through the decision core, which may evict what an
	// earlier stage let go. The simulator takes the steps at the start
	// instant; live, they happen as the worker reaches each stage.
	// A job whose models fit the device together keeps its finished
	// stages' models pinned until a stage finds no room beside them.
	keepAll := s.fitsWhole(d, lead.plan)
	var done []string
	keepDone := func() bool {
		moved := false
		for _, m := range done {
			if i := slices.Index(pinned, m); i >= 0 {
				pinned = slices.Delete(pinned, i, i+1)
				if r := w.resident[m]; r != nil {
					r.pins--
					r.kept++
					kept = append(kept, r)
					moved = true
				}
			}
		}
		done = nil
		return moved
	}
	reserveStage := func(key string, bytes uint64) (*device.Reservation, error) {
		res, err := s.reserve(d, w, key, bytes)
		if errors.Is(err, dispatch.ErrVRAMHeld) && keepDone() {
			res, err = s.reserve(d, w, key, bytes)
		}
		return res, err
	}
	for k, st := range lead.plan.Stages {
		if k > 0 {
			done, _ = lead.plan.Step(k)
			if !keepAll {
				keepDone()
			}
		}
		if act != nil {
			d.ledger.Release(act)
			act = nil
		}
		for i, m := range st.Models {
			if slices.Contains(pinned, m) {
				continue
			}
			if r, ok := w.resident[m]; ok {
				r.pins++
				pinned = append(pinned, m)
				if recs[m] == nil {
					hits[m] = r
				}
				continue
			}
			res, err := reserveStage(m, st.ModelBytes[i])
			if err != nil {
				fail(err)
				return
			}
			r := &resident{bytes: st.ModelBytes[i], res: res, pins: 1, fresh: true}
			w.resident[m], recs[m] = r, r
			fresh = append(fresh, m)
			pinned = append(pinned, m)
		}
		if st.ActivationBytes > 0 {
			res, err := reserveStage(fmt.Sprintf("(activations %s)", lead.id), st.ActivationBytes)
			if err != nil {
				fail(err)
				return
			}
			act = res
		}
	}
	// Every model is reserved: charge the loads, tier by tier.
	var load time.Duration
	u := use{device: w.dev, worker: w.id, models: lead.models, cold: make([]bool, len(lead.models)), coldCost: make([]time.Duration, len(lead.models))}
	for i, m := range lead.models {
		r := recs[m]
		if r == nil {
			r = hits[m]
		}
		if r == nil {
			continue // in no stage: not loaded
		}
		if !r.fresh {
			s.vram.Hits++
			s.vram.Bytes += int64(r.bytes)
			r.hits++
			r.lastUse = s.now
			continue
		}
		s.vram.Misses++
		if !s.firstUse[m] {
			s.firstUse[m] = true
			u.cold[i] = true
		}
		lt := s.fetch(m, d.cost)
		if u.cold[i] {
			u.coldCost[i] = lt
		}
		r.fresh = false
		r.inserted, r.lastUse, r.loadCost = s.now, s.now, lt
		load += lt
		lead.loads++
		s.coldLoads++
	}
	s.uses = append(s.uses, u)
	s.loadTime += load
	if len(batch) > 1 {
		s.batches++
		s.batchedJobs += len(batch)
	}
	at := s.now + load // compute starts once the models are in
	if fused, ok := s.fusedCompute(batch, d.cost); ok {
		for _, j := range batch {
			j.start, j.device, j.compute, j.done, j.shared = s.now, w.dev, fused, at+fused, len(batch)
		}
		lead.load = load
		if fused > 0 {
			d.busy = append(d.busy, interval{at, at + fused})
		}
		at += fused
	} else {
		for i, j := range batch {
			j.start, j.device = s.now, w.dev
			if i > 0 {
				// A follower starts when the job before it ends.
				j.start = at
			}
			j.compute = s.cfg.Cost.JobEstimate(j.work, d.cost)
			j.done = at + j.compute
			if j.compute > 0 {
				d.busy = append(d.busy, interval{at, j.done})
			}
			at = j.done
		}
		lead.load = load
	}
	for i, j := range batch {
		j.state = jobRunning
		j.attempts++
		if j.attempts == 1 {
			s.demand.Observe(epoch.Add(j.req.Time), j.models)
		}
		if i > 0 {
			// Followers find every model warm: one VRAM hit each, as their
			// live stage entries (jobHold.enter) count.
			s.vram.Hits += int64(len(j.models))
			for _, m := range j.models {
				if r := w.resident[m]; r != nil {
					s.vram.Bytes += int64(r.bytes)
					r.hits++
				}
			}
			s.uses = append(s.uses, use{device: w.dev, worker: w.id, models: j.models, cold: make([]bool, len(j.models))})
		}
		if s.opts.OnStart != nil {
			s.opts.OnStart(j.index, w.id)
		}
	}
	w.batch, w.busyUntil = batch, at
	s.replayStart(w, batch)
	w.run++
	w.loaded, w.busy = fresh, [2]int{busyFrom, len(d.busy)}
	w.held, w.act, w.kept = pinned, act, kept
	s.push(event{at: at, kind: evDone, w: w, run: w.run})
}

// fusedCompute is the compute time of a batch run as one (sim.
// batch_execution fused): the members' samplers and decodes at the summed
// batch size, so the cost model's batch efficiency applies. Members whose
// work differs in shape (steps, size, family) cannot share a sampler run;
// such a batch, and every batch under sequential execution, is charged one
// job after the other (ok false).
func (s *simulator) fusedCompute(batch []*simJob, dev cost.Device) (time.Duration, bool) {
	if len(batch) < 2 || s.cfg.BatchExecution == BatchSequential {
		return 0, false
	}
	w := batch[0].work
	for _, j := range batch[1:] {
		if !sameShape(w, j.work) {
			return 0, false
		}
	}
	k := len(batch)
	f := w
	f.TextEncodes = w.TextEncodes * k
	f.LoRAs = w.LoRAs // applied once to the shared model
	f.Samplers = slices.Clone(w.Samplers)
	for i := range f.Samplers {
		f.Samplers[i].Batch = max(f.Samplers[i].Batch, 1) * k
	}
	f.Decodes = slices.Clone(w.Decodes)
	for i := range f.Decodes {
		f.Decodes[i].Batch = max(f.Decodes[i].Batch, 1) * k
	}
	f.Upscales = slices.Clone(w.Upscales)
	for i := range f.Upscales {
		f.Upscales[i].Batch = max(f.Upscales[i].Batch, 1) * k
	}
	return s.cfg.Cost.JobEstimate(f, dev), true
}

func sameShape(a, b cost.Work) bool {
	return a.Family == b.Family && a.TextEncodes == b.TextEncodes && a.LoRAs == b.LoRAs &&
		slices.Equal(a.Samplers, b.Samplers) && slices.Equal(a.Decodes, b.Decodes) && slices.Equal(a.Upscales, b.Upscales)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fetch walks the host tiers for model m and returns the time to make it
// resident on a device: RAM hit → host→device transfer; disk hit → disk
// read plus transfer; miss → remote read, disk read and transfer. Each tier
// passed on the way keeps a copy (inclusive tiers, as internal/tier). A
// model whose lookahead transfer is still in flight is waited for, as the
// tiers' single-flight shares the transfer.
func (s *simulator) fetch(m string, dev cost.Device) time.Duration {
	mod := s.models[m]
	c := s.cfg.Cost
	if end, ok := s.inflight[m]; ok {
		// Land the prefetch now and wait for the rest of its transfer.
		delete(s.inflight, m)
		without := s.unused[m] + c.TransferTime(mod.Bytes, dev)
		delete(s.unused, m)
		s.landPrefetch(m, mod)
		s.ram.stats.Hits++
		s.ram.stats.Bytes += mod.Bytes
		got := (end - s.now) + c.TransferTime(mod.Bytes, dev)
		s.prefetch.Used++
		s.warmUsed(m)
		s.prefetch.UsedBytes += mod.Bytes
		s.prefetch.saved += without - got
		return got
	}
	if !s.cfg.NoRAMTier && s.ram.lookup(m, mod.Bytes, s.now) {
		if without, ok := s.unused[m]; ok {
			delete(s.unused, m)
			s.prefetch.Used++
			s.warmUsed(m)
			s.prefetch.UsedBytes += mod.Bytes
			s.prefetch.saved += without
		}
		return c.TransferTime(mod.Bytes, dev)
	}
	if s.disk.lookup(m, mod.Bytes, s.now) {
		if !s.cfg.NoRAMTier {
			s.evicted(s.ram.insert(m, mod.Bytes, s.now, c.DiskReadTime(mod.Bytes)))
		}
		return c.LoadTime(mod.Family, mod.Bytes, dev)
	}
	s.remote.Hits++
	s.remote.Bytes += mod.Bytes
	remote := s.remoteTime(mod.Bytes)
	s.evicted(s.disk.insert(m, mod.Bytes, s.now, remote))
	if !s.cfg.NoRAMTier {
		s.evicted(s.ram.insert(m, mod.Bytes, s.now, remote+c.DiskReadTime(mod.Bytes)))
	}
	return s.remoteTime(mod.Bytes) + c.LoadTime(mod.Family, mod.Bytes, dev)
}

// reserve takes VRAM on the device's ledger through the live dispatcher's
// decision core (dispatch.Core.Reserve): the same evict-and-retry rounds
// over the device's entries, sorted as the dispatcher sorts them.
func (s *simulator) reserve(d *simDevice, w *simWorker, model string, bytes uint64) (*device.Reservation, error) {
	var keys []entryKey
	spare := true // kept models count as pinned: they go last
	room := dispatch.Room{
		Device: d.index,
		Ledger: d.ledger,
		List: func() ([]decision.EntryView, uint64) {
			var entries []decision.EntryView
			var pinned uint64
			entries, keys, pinned = s.entriesOf(d, spare)
			// Contexts and activations wait to be let go like pins.
			return entries, pinned + dispatch.HeldBytes(d.ledger)
		},
		Evict: func(i int) {
			k := keys[i]
			r := k.w.resident[k.model]
			if r == nil || r.pins > 0 {
				return
			}
			d.ledger.Release(r.res)
			delete(k.w.resident, k.model)
			s.vram.Evictions++
			s.vram.EvictedBytes += int64(r.bytes)
		},
	}
	// As the live dispatcher reserves: first without the models running
	// jobs keep from finished stages, then with them.
	res, err := s.core.Reserve(room, w.id, model, bytes)
	if errors.Is(err, dispatch.ErrVRAMHeld) && s.keptOn(d) {
		spare = false
		res, err = s.core.Reserve(room, w.id, model, bytes)
	}
	return res, err
}

// fitsWhole reports whether plan's models and largest activations fit d
// together beside its workers' contexts (dispatch's fitsWhole).
func (s *simulator) fitsWhole(d *simDevice, plan dispatch.Plan) bool {
	contexts := uint64(len(d.workers)) * s.cfg.WorkerContextBytes
	usable := d.ledger.Usable()
	return contexts < usable && plan.Whole() <= usable-contexts
}

// keptOn reports whether a running batch keeps a finished stage's model
// on d.
func (s *simulator) keptOn(d *simDevice) bool {
	for _, w := range d.workers {
		for _, r := range w.resident {
			if r.kept > 0 && r.pins == 0 {
				return true
			}
		}
	}
	return false
}

type entryKey struct {
	w     *simWorker
	model string
}

// deviceEntries lists the models resident on a device's workers in the
// dispatcher's order (dispatch.SortEntries).
func (s *simulator) deviceEntries(d *simDevice) ([]decision.EntryView, []entryKey, uint64) {
	return s.entriesOf(d, false)
}

// entriesOf is deviceEntries, with the models running batches keep from
// finished stages shown pinned when spare is set (reserve's first pass).
func (s *simulator) entriesOf(d *simDevice, spare bool) ([]decision.EntryView, []entryKey, uint64) {
	var entries []decision.EntryView
	var keys []entryKey
	var pinnedBytes uint64
	for _, w := range d.workers {
		for m, r := range w.resident {
			pinned := r.pins > 0 || (spare && r.kept > 0)
			if pinned {
				pinnedBytes += r.bytes
			}
			entries = append(entries, decision.EntryView{Model: m, Worker: w.id, Bytes: r.bytes,
				LastUse: epoch.Add(r.lastUse), Hits: r.hits, Pinned: pinned,
				Inserted: epoch.Add(r.inserted), LoadCost: r.loadCost, RecentDemand: s.demand.Of(epoch.Add(s.now), m)})
			keys = append(keys, entryKey{w: w, model: m})
		}
	}
	dispatch.SortEntries(entries, keys)
	return entries, keys, pinnedBytes
}

// release unpins what the batch running on w still holds and gives back
// its activations.
func (s *simulator) release(w *simWorker) {
	for _, m := range w.held {
		if r, ok := w.resident[m]; ok {
			r.pins--
			r.lastUse = s.now
		}
	}
	if w.act != nil {
		s.devices[w.dev].ledger.Release(w.act)
	}
	for _, r := range w.kept {
		r.kept--
	}
	w.held, w.act, w.kept = nil, nil, nil
}

// finish ends the batch running on w.
func (s *simulator) finish(w *simWorker) {
	s.release(w)
	for _, j := range w.batch {
		j.state = jobDone
	}
	s.observeCanary(w.id, w.batch)
	s.observeWatch(w.batch)
	w.batch = nil
	s.blocked = false
}
