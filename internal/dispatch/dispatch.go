package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/predict"
	"github.com/kiln-gpu/kiln/internal/tier"
	"github.com/kiln-gpu/kiln/internal/worker"
	"github.com/kiln-gpu/kiln/internal/workflow"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// Hooks let the metrics layer observe the dispatcher without the dispatcher
// importing it. Every field is optional.
type Hooks struct {
	JobFinished  func(j *job.Job)
	ModelLoaded  func(model string, d time.Duration)
	ModelEvicted func(model string)
	// JobPreempted sees a job given back to the queue by a preemption,
	// as the store recorded it.
	JobPreempted func(j *job.Job)
}

// Options are the dispatcher's collaborators.
type Options struct {
	Store   *job.Store
	Pool    *worker.Pool
	Devices *device.Set
	Catalog *catalog.Catalog
	// Tiers, when set, makes each model's bytes resident in shared memory
	// (L2) before a worker loads it from there; without it workers load
	// from the catalog's file path.
	Tiers *tier.Manager
	// Demand, when set, counts each job's models at its first start (with
	// its submission time), and the VRAM entries the evictor sees carry
	// its counts (EntryView.RecentDemand); the node gives its tiers the
	// same one.
	Demand *predict.Demand
	// Cost estimates load times for the policies' views.
	Cost  cost.Config
	Clock clock.Clock
	Log   zerolog.Logger
	Hooks Hooks

	Scheduler decision.Scheduler
	Balancer  decision.Balancer
	Evictor   decision.Evictor
	// LookaheadJobs is how many jobs at the head of the queue have their
	// models pulled up the tiers while they wait: 0 means
	// DefaultLookaheadJobs, a negative value turns lookahead off.
	LookaheadJobs int
	// Batcher groups queued jobs that share a batch key to run one after
	// the other on one worker, models warm; nil runs every job alone.
	Batcher decision.Batcher
	// Preemption lets a Scheduler that is a Planner stop a running job
	// for a waiting job of a higher class (Core.Preempt); off by default
	// here, on in the embedded config (dispatch.preemption).
	Preemption bool
	// PreemptMinRun is how long a job runs before it may be preempted; 0
	// means DefaultPreemptMinRun.
	PreemptMinRun time.Duration
	// VRAMWait bounds a started job's wait for VRAM that running jobs
	// hold; 0 means DefaultVRAMWait.
	VRAMWait time.Duration
	// WorkerContextBytes is the VRAM each worker process holds before any
	// model (its CUDA context): reserved on its device's ledger at its
	// first job and taken off the room the policies see. 0 reserves none.
	WorkerContextBytes uint64
}

// Progress is the live state of a running job.
type Progress struct {
	Phase string `json:"phase"` // loading | running
	Node  string `json:"node,omitempty"`
	Value int    `json:"value"`
	Max   int    `json:"max"`
}

// Dispatcher moves jobs from the durable queue onto workers: it asks the
// scheduler which job runs next and the balancer where, makes the job's
// models resident on that worker (evicting through the evictor under the VRAM
// ledger), runs it, and records the outcome in the store. It assumes nothing
// about which policies it is given.
type Dispatcher struct {
	opts Options
	core Core
	log  zerolog.Logger
	clk  clock.Clock
	wake chan struct{}

	mu       sync.Mutex
	running  map[string]*runningJob
	progress map[string]Progress
	// claimed holds the batch members waiting for their turn on the
	// worker that runs their batch: queued in the store, hidden from the
	// scheduler so that no other worker takes them.
	claimed  map[string]string                    // job → the worker it waits for
	resident map[string]map[string]*residentModel // worker → model → state
	contexts map[string]*device.Reservation       // worker → its context's reservation
	unpinned chan struct{}                        // closed and replaced on every unpin
	gates    map[int]*deviceGate                  // device → the order its jobs enter stages in (admit.go)

	estimates   estimates
	activations activations // measured refinements of the activation estimates
	events      bus
	prefetching atomic.Bool            // a lookahead is climbing the tiers
	fit         atomic.Pointer[fitKey] // what the plans are made for (refreshFit)
	wg          sync.WaitGroup
	// rounds counts the dispatch loop's finished rounds, so that a test
	// can tell that the loop has looked at a state it set up (a decision
	// not taken leaves nothing else to wait for).
	rounds atomic.Uint64
	// lookaheads counts the rounds that looked ahead (lookaheadPace), for
	// a test.
	lookaheads atomic.Uint64
}

// runningJob is a job between its start and its outcome: what a
// preemption needs to show the scheduling policy and to stop it.
type runningJob struct {
	job     *job.Job
	worker  string
	started time.Time
	cancel  context.CancelCauseFunc
	// preempting is set once a preemption has cancelled the job, until
	// its attempt ends.
	preempting bool
}

// errPreempted is the cause with which a preemption cancels a job's run, so
// that the end of the attempt is told from a user's cancel.
var errPreempted = errors.New("preempted for a job of a higher class")

// cancelledJob is the cause with which Cancel ends a running job's
// context: the job as the store committed its cancellation, which execute
// reports when the worker has stopped.
type cancelledJob struct{ job *job.Job }

func (c *cancelledJob) Error() string { return "job cancelled" }

type residentModel struct {
	model   string
	res     *device.Reservation
	pins    int
	hits    int
	lastUse time.Time
	// inserted is when the load started, loadTook how long it took: the
	// eviction policies' age and cost of an entry.
	inserted time.Time
	loadTook time.Duration
	loading  chan struct{} // non-nil while a load is in flight
	loadErr  error
	// kept counts the running jobs that finished a stage with the model
	// and keep it (jobHold.enter): unpinned, it is evicted only when
	// nothing else makes the room (reserve).
	kept int
}

// New returns a dispatcher; call Run to start it.
func New(opts Options) *Dispatcher {
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	if opts.Cost.TimeScale == 0 {
		opts.Cost = cost.Default()
	}
	opts.Cost = opts.Cost.WithDefaults()
	// A policy not given is the native build of the fallback built-in
	// (policy.Native), as for a module that faults.
	if opts.Scheduler == nil {
		opts.Scheduler = policy.Native().Scheduler()
	}
	if opts.Balancer == nil {
		opts.Balancer = policy.Native().Balancer()
	}
	if opts.Evictor == nil {
		opts.Evictor = policy.Native().NewEvictor()
	}
	if opts.Batcher == nil {
		opts.Batcher = policy.Native().Batcher()
	}
	if opts.LookaheadJobs == 0 {
		opts.LookaheadJobs = DefaultLookaheadJobs
	}
	if opts.PreemptMinRun <= 0 {
		opts.PreemptMinRun = DefaultPreemptMinRun
	}
	return &Dispatcher{
		opts:     opts,
		core:     Core{Scheduler: opts.Scheduler, Balancer: opts.Balancer, Evictor: opts.Evictor, Batcher: opts.Batcher},
		claimed:  map[string]string{},
		log:      opts.Log,
		clk:      opts.Clock,
		wake:     make(chan struct{}, 1),
		running:  map[string]*runningJob{},
		progress: map[string]Progress{},
		resident: map[string]map[string]*residentModel{},
		contexts: map[string]*device.Reservation{},
		unpinned: make(chan struct{}),
		gates:    map[int]*deviceGate{},
	}
}

// SetPool sets the worker pool. The pool takes the dispatcher's hooks, so the
// two are built in turn; call SetPool before Run.
func (d *Dispatcher) SetPool(p *worker.Pool) { d.opts.Pool = p }

// Wake asks the dispatcher to look at the queue and the workers again.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// OnWorkerReady is the pool's OnReady hook: a worker that said hello may
// change what the node's plans are made for (refreshFit).
func (d *Dispatcher) OnWorkerReady(*worker.Worker) {
	d.refreshFit()
	d.Wake()
}

// OnWorkerExit is the pool's OnExit hook: the process is gone, so are its
// models; their VRAM goes back to the ledger.
func (d *Dispatcher) OnWorkerExit(w *worker.Worker, _ []string, reason string) {
	d.mu.Lock()
	models := d.resident[w.ID()]
	delete(d.resident, w.ID())
	ctxRes := d.contexts[w.ID()]
	delete(d.contexts, w.ID())
	d.mu.Unlock()
	led := d.opts.Devices.Ledger(w.Device().Index)
	for _, rm := range models {
		if rm.res != nil {
			led.Release(rm.res)
		}
	}
	if ctxRes != nil {
		led.Release(ctxRes)
	}
	d.log.Debug().Str("worker", w.ID()).Str("reason", reason).Int("models", len(models)).Msg("worker gone; released its VRAM")
	d.refreshFit()
	d.signalUnpin()
	d.Wake()
}

// Progress returns the live progress of a running job.
func (d *Dispatcher) Progress(id string) (Progress, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.progress[id]
	return p, ok
}

// Cancel cancels a queued or running job. A running job's worker is told to
// stop; the store records the cancellation first so that the job cannot be
// finished or re-queued afterwards.
func (d *Dispatcher) Cancel(id string) (*job.Job, error) {
	j, err := d.opts.Store.Cancel(id)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	rj := d.running[id]
	d.mu.Unlock()
	if rj != nil {
		// execute reports the end once the worker has stopped, with the
		// job as the store committed it (no read back).
		rj.cancel(&cancelledJob{job: j})
	} else {
		d.finished(j)
	}
	return j, nil
}

// lookaheadPace is the shortest time between two lookaheads. A round runs
// after every commit that queues a job, and under a stream of submits the
// lookahead (a window of the queue, the workers, the policy's planned
// order) was the dearest part of it, ~45 µs of CPU per round on the path
// of every durable submit, mostly to reach the same answer: the queue's
// head and the RAM tier rarely change between two commits (BENCHMARKS.md,
// issue 20 item 1, third pass). A model load takes far longer than the
// pace.
const lookaheadPace = 20 * time.Millisecond

// Run dispatches until ctx ends, then waits for the jobs it started to stop.
// Jobs interrupted by shutdown stay "running" in the store and are queued
// again when the store is next opened.
func (d *Dispatcher) Run(ctx context.Context) {
	defer d.wg.Wait()
	notify := d.opts.Store.Notify()
	var lastLook time.Time
	for {
		d.dispatchReady(ctx)
		d.preempt()
		// A round within lookaheadPace of the last lookahead skips it and
		// comes back when the pace allows, so that the last change of a
		// burst is still looked ahead of.
		var paced <-chan time.Time
		now := d.clk.Now()
		if wait := lookaheadPace - now.Sub(lastLook); wait <= 0 || wait > lookaheadPace {
			d.lookahead(ctx)
			lastLook = now
		} else {
			paced = d.clk.After(wait)
		}
		d.rounds.Add(1)
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-notify:
		case <-paced:
		case <-d.clk.After(time.Second):
			// A safety net: a lost wake-up costs at most a second.
		}
	}
}

// dispatchReady starts jobs while there are idle workers and queued jobs.
func (d *Dispatcher) dispatchReady(ctx context.Context) {
	for ctx.Err() == nil {
		workers := d.workerViews()
		idle := 0
		for _, w := range workers {
			if w.Idle {
				idle++
			}
		}
		if idle == 0 {
			return
		}
		queued := d.queuedViews(decision.QueueWindow)
		if len(queued) == 0 {
			return
		}
		ids, wid, ok := d.choose(queued, workers)
		if !ok {
			return
		}
		lease, ok := d.opts.Pool.Acquire(wid)
		if !ok {
			// The worker died or was taken between the snapshot and now;
			// look again.
			continue
		}
		j, err := d.opts.Store.Start(ids[0], wid)
		if err != nil {
			d.opts.Pool.Release(lease, false)
			if errors.Is(err, job.ErrBadTransition) || errors.Is(err, job.ErrNotFound) {
				continue // cancelled meanwhile
			}
			d.log.Error().Err(err).Str("job", ids[0]).Msg("start job")
			return
		}
		followers := ids[1:]
		d.mu.Lock()
		for _, f := range followers {
			d.claimed[f] = wid
		}
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.runBatch(ctx, j, followers, lease)
		}()
	}
}

// runBatch runs a started lead job and then its batch followers on the
// lease's worker, one after the other: each follower finds the lead's
// models warm and pinned (the pins are held across the batch so that no
// other worker's load evicts them in between). A follower cancelled
// meanwhile is skipped; when an attempt is lost (the worker died, the
// kernel stops) the rest go back to the scheduler.
func (d *Dispatcher) runBatch(ctx context.Context, lead *job.Job, followers []string, lease worker.Lease) {
	completed := 0 // jobs that ran to an outcome: the pool counts them toward recycling
	var hold func()
	defer func() {
		if hold != nil {
			hold()
		}
		d.mu.Lock()
		for _, f := range followers {
			delete(d.claimed, f)
		}
		d.mu.Unlock()
		d.opts.Pool.Release(lease, completed > 0)
		d.Wake()
	}()
	next := 0 // index of the next follower to start
	for j := lead; j != nil; {
		ok, warm := d.runOne(ctx, j, lease, hold == nil && next < len(followers), hold)
		if warm != nil {
			hold = warm
		}
		if !ok {
			return
		}
		completed++
		j = nil
		for j == nil && next < len(followers) && ctx.Err() == nil {
			id := followers[next]
			next++
			// An error means it was cancelled or is gone since the batch
			// was formed: go on with the next.
			j, _ = d.opts.Store.Start(id, lease.Worker.ID())
			d.mu.Lock()
			delete(d.claimed, id)
			d.mu.Unlock()
		}
	}
}

// runOne runs one started job on the lease's worker. ok is false when the
// attempt was lost in a way that should stop a batch (the worker died, the
// kernel stops). With keepWarm, the job's models stay pinned after it and
// warm unpins them. inherited, when set, unpins the models the batch's
// lead left pinned for this job; the job calls it if it must wait for
// room (calling it again does nothing).
func (d *Dispatcher) runOne(kernelCtx context.Context, j *job.Job, lease worker.Lease, keepWarm bool, inherited func()) (ok bool, warm func()) {
	runCtx, cancel := context.WithCancelCause(kernelCtx)
	defer cancel(nil)
	d.mu.Lock()
	d.running[j.ID] = &runningJob{job: j, worker: lease.Worker.ID(), started: d.clk.Now(), cancel: cancel}
	d.progress[j.ID] = Progress{Phase: "loading"}
	d.mu.Unlock()
	return d.execute(runCtx, kernelCtx, j, lease, keepWarm, inherited)
}

// lookahead starts the models of the jobs at the head of the queue climbing
// the tiers (remote → disk → shared memory) while they wait, so that loading
// overlaps queueing instead of following it. An eviction policy that
// prefetches (Prefetcher) chooses which of those models go
// (Core.Lookahead). One lookahead runs at a time; the tiers' single-flight
// shares its transfers with any load that wants the same model meanwhile,
// and nothing is pinned.
func (d *Dispatcher) lookahead(ctx context.Context) {
	d.lookaheads.Add(1)
	n := d.opts.LookaheadJobs
	if d.opts.Tiers == nil || n < 0 || !d.prefetching.CompareAndSwap(false, true) {
		return
	}
	ids := d.core.Lookahead(decision.PlannedOrder(d.core.Scheduler, d.queuedViews(n), d.workerViews()), n, d.ramRoom())
	if len(ids) == 0 {
		d.prefetching.Store(false)
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer d.prefetching.Store(false)
		if err := d.opts.Tiers.Prefetch(ctx, ids); err != nil && ctx.Err() == nil {
			d.log.Debug().Err(err).Msg("lookahead")
		}
	}()
}

// ramRoom is the RAM tier as a prefetching policy sees it: the lookahead
// fills that tier. Its entries are not listed (the tier keeps them to
// itself); a policy that needs them sees none and judges by the room.
func (d *Dispatcher) ramRoom() PrefetchRoom {
	room := PrefetchRoom{Cached: d.opts.Tiers.InRAM}
	for _, st := range d.opts.Tiers.Stats() {
		if st.Name == "ram" {
			room.Free = uint64(max(st.CapacityBytes, 0))
		}
	}
	return room
}

// choose asks the decision core (Core.Choose) for the next dispatch and
// fails the jobs it found no device could ever hold.
func (d *Dispatcher) choose(queued []decision.JobView, workers []decision.WorkerView) (jobIDs []string, workerID string, ok bool) {
	dec, ok := d.core.Choose(queued, workers)
	for _, u := range dec.Unfit {
		if fj, ferr := d.opts.Store.Fail(u.JobID, u.Err.Error()); ferr == nil {
			d.finished(fj)
		}
		d.log.Warn().Str("job", u.JobID).Err(u.Err).Msg("job can never fit on this node's devices")
	}
	if dec.SchedulerFault != nil {
		d.log.Error().Err(dec.SchedulerFault).Msg("ignoring the scheduling policy's answer")
	}
	if dec.BatchFault != nil {
		d.log.Error().Err(dec.BatchFault).Msg("batching policy gave an invalid batch; running the lead alone")
	}
	return dec.Jobs, dec.Worker, ok
}

// queuedViews describes the queue's window (job.Store.Window): up to
// perClass jobs of each class, in queue order across classes, each with
// its place in that order as Seq. Jobs claimed by a batch being started
// are left out.
func (d *Dispatcher) queuedViews(perClass int) []decision.JobView {
	// The decision core fails a job whose plan fits no device: the plans
	// it sees are made for the pool as it is now.
	d.refreshFit()
	jobs := d.opts.Store.Window(perClass)
	now := d.clk.Now()
	out := make([]decision.JobView, 0, len(jobs))
	d.mu.Lock()
	claimed := maps.Clone(d.claimed)
	d.mu.Unlock()
	lc := d.loadCoster()
	for i, j := range jobs {
		if _, ok := claimed[j.ID]; ok {
			continue
		}
		plan := d.estimates.planOf(d, j)
		sizes := make([]uint64, len(j.Models))
		loads := make([]time.Duration, len(j.Models))
		for i, m := range j.Models {
			if e, err := d.opts.Catalog.Lookup(m); err == nil {
				sizes[i] = plan.Bytes(m)
				if sizes[i] == 0 {
					sizes[i] = uint64(e.VRAMBytes)
				}
				// A policy weighs it against waiting for a worker that
				// already holds the model.
				loads[i] = lc.of(e)
			}
		}
		// A job needs its largest stage on one device, not all its
		// models at once (Plan.Peak).
		vram := plan.Peak()
		out = append(out, decision.JobView{
			ID: j.ID, Class: j.Class, Seq: uint64(i) + 1, Age: now.Sub(j.CreatedAt), DeadlineMS: j.DeadlineMS,
			Models: j.Models, Attempts: j.Attempts, EstimatedVRAM: vram, ModelBytes: sizes, LoadCost: loads,
			BatchKey: BatchKey(j.Models), EstimatedCost: d.estimates.of(d, j),
		})
	}
	d.mu.Lock()
	if n := len(jobs) + len(d.running) + len(d.claimed); d.estimates.overgrown(n) {
		keep := make(map[string]bool, n)
		for _, j := range jobs {
			keep[j.ID] = true
		}
		for id := range d.running {
			keep[id] = true
		}
		for id := range d.claimed {
			keep[id] = true
		}
		d.estimates.keepOnly(keep)
	}
	d.mu.Unlock()
	return out
}

func (d *Dispatcher) workerViews() []decision.WorkerView {
	infos := d.opts.Pool.Infos()
	busy := map[int]int{}
	perDevice := map[int]uint64{}
	for _, in := range infos {
		if in.State == worker.Busy {
			busy[in.Device]++
		}
		perDevice[in.Device]++
	}
	// A busy worker is expected to be free once its job has run for its
	// estimate and the batch followers waiting for it have run for theirs.
	// The estimates are taken outside d.mu: one not made yet reads the
	// job's graph from the store.
	now := d.clk.Now()
	d.mu.Lock()
	running := make([]runningJob, 0, len(d.running))
	for _, rj := range d.running {
		running = append(running, runningJob{job: rj.job, worker: rj.worker, started: rj.started})
	}
	wait := make(map[string]time.Duration, len(running))
	for id, wid := range d.claimed {
		// A batch follower was estimated when it was queued.
		if est, ok := d.estimates.cached(id); ok {
			wait[wid] += est
		}
	}
	d.mu.Unlock()
	for _, rj := range running {
		wait[rj.worker] += max(d.estimates.of(d, rj.job)-now.Sub(rj.started), 0)
	}
	out := make([]decision.WorkerView, 0, len(infos))
	for _, in := range infos {
		led := d.opts.Devices.Ledger(in.Device)
		v := decision.WorkerView{
			ID: in.ID, Device: in.Device, Idle: in.State == worker.Ready, DeviceBusy: busy[in.Device],
			Resident: decision.ResidentList(nil, in.Resident), EstimatedWait: wait[in.ID],
		}
		// A worker that does not report a model's footprint (its load
		// reply's vram_bytes is optional) still holds what the ledger
		// reserved for it: the policy sees that, not 0. Workers that
		// report it (the usual case) cost no lock here.
		for i := range v.Resident {
			if v.Resident[i].Bytes > 0 {
				continue
			}
			d.mu.Lock()
			if rm := d.resident[in.ID][v.Resident[i].Model]; rm != nil && rm.res != nil {
				v.Resident[i].Bytes = int64(rm.res.Bytes())
			}
			d.mu.Unlock()
		}
		if led != nil {
			v.FreeVRAM = led.Free()
			// The device's workers' contexts are never room for models:
			// a job fits when its largest stage fits beside them.
			v.UsableVRAM = led.Usable() - min(led.Usable(), perDevice[in.Device]*d.opts.WorkerContextBytes)
		}
		v.Degraded = d.opts.Devices.Degraded(in.Device)
		if w := d.opts.Pool.Get(in.ID); w != nil {
			v.H2DBytesPerS = uint64(w.Device().H2DBandwidth)
		}
		out = append(out, v)
	}
	return out
}

// execute runs one started job to its end and records the outcome. ok is
// false when the attempt was lost to the worker or the kernel (the job is
// back in the queue or stays running for the next start). With keepWarm a
// successful job's models stay pinned and warm unpins them.
func (d *Dispatcher) execute(ctx, kernelCtx context.Context, j *job.Job, lease worker.Lease, keepWarm bool, inherited func()) (ok bool, warm func()) {
	w := lease.Worker
	log := d.log.With().Str("job", j.ID).Str("worker", w.ID()).Int("attempt", j.Attempts).Logger()
	d.publish(job.Event{Type: job.EventStarted, JobID: j.ID, ClientID: j.ClientID, Worker: w.ID(), Attempt: j.Attempts, Job: j})
	if j.Attempts <= 1 {
		d.opts.Demand.Observe(j.CreatedAt, j.Models)
	}
	defer func() {
		d.mu.Lock()
		delete(d.running, j.ID)
		delete(d.progress, j.ID)
		d.mu.Unlock()
	}()

	// A worker of protocol 1.3 gets the client's bytes as they were
	// stored; an older one, the graph as a msgpack map, which costs the
	// kernel a decode of the workflow here.
	var graph map[string]any
	if !w.Speaks(wire.CapabilityWorkflowJSON) {
		workflow.CountDecode()
		if err := json.Unmarshal(j.Workflow, &graph); err != nil {
			// The API validated this graph before storing it; a store that
			// hands back something else is corrupt, and the job cannot run.
			if fj, ferr := d.opts.Store.Fail(j.ID, "stored workflow is unreadable: "+err.Error()); ferr == nil {
				d.finished(fj)
			}
			return true, nil
		}
	}
	// A worker that speaks stages gets the job's models stage by stage
	// (docs/stages.md); any other gets them all before the run.
	plan := d.estimates.planOf(d, j)
	staged := len(plan.Stages) > 1 && w.Speaks(wire.CapabilityStages)
	hold := &jobHold{d: d, w: w, jobID: j.ID, plan: plan, inherited: inherited, keepAll: d.fitsWhole(w, plan)}
	first, act := j.Models, plan.MaxActivation()
	if staged {
		first, act = plan.Stages[0].Models, plan.Stages[0].ActivationBytes
	}
	err := d.ensureContext(ctx, w)
	if err == nil {
		err = hold.enter(ctx, first, nil, act, false)
	}
	if err != nil {
		hold.done()
	} else {
		d.setProgress(j.ID, Progress{Phase: "running"})
		d.publish(job.Event{Type: job.EventRunning, JobID: j.ID, ClientID: j.ClientID, Worker: w.ID(), Attempt: j.Attempts})
		req := wire.RunRequest{JobID: j.ID, Attempt: j.Attempts, Workflow: graph, Models: j.Models}
		if graph == nil {
			req.WorkflowJSON = j.Workflow
		}
		onProgress := func(p wire.Progress) {
			d.setProgress(j.ID, Progress{Phase: "running", Node: p.Node, Value: p.Value, Max: p.Max})
			d.publish(withPreview(job.Event{Type: job.EventProgress, JobID: j.ID, ClientID: j.ClientID, Worker: w.ID(), Attempt: j.Attempts,
				Node: p.Node, Value: p.Value, Max: p.Max}, p))
		}
		var res wire.RunResult
		if staged {
			req.Stages = wireStages(plan)
			res, err = w.RunStaged(ctx, req, onProgress, func(k int) error {
				if k >= len(plan.Stages) {
					return fmt.Errorf("worker asked for stage %d of %d", k, len(plan.Stages))
				}
				done, _ := plan.Step(k)
				d.setProgress(j.ID, Progress{Phase: "loading"})
				return hold.enter(ctx, plan.Stages[k].Models, done, plan.Stages[k].ActivationBytes, true)
			})
		} else {
			res, err = w.Run(ctx, req, onProgress)
		}
		if err == nil && res.ActivationBytes > 0 {
			// What the run measured refines the next jobs' reservations.
			d.activations.observe(plan.family(), plan.MaxActivation(), uint64(res.ActivationBytes))
		}
		if err == nil && keepWarm {
			// The next job of the batch finds the models pinned; it holds
			// its own activations.
			hold.releaseActivations()
			warm = hold.done
		} else {
			hold.done()
		}
		if err == nil {
			outs := make([]job.Output, 0, len(res.Outputs))
			for _, o := range res.Outputs {
				outs = append(outs, job.Output{Node: o.Node, Filename: o.Filename, Subfolder: o.Subfolder, Type: o.Type})
			}
			fj, ferr := d.opts.Store.Finish(j.ID, outs)
			if ferr != nil {
				log.Warn().Err(ferr).Msg("record finished job")
				return true, warm
			}
			d.finished(fj)
			return true, warm
		}
	}
	return d.recordFailure(ctx, kernelCtx, j, err, log), warm
}

// recordFailure decides what a failed attempt means: a cancelled job stays
// cancelled, a dead worker or a kernel shutdown gives the job back to the
// queue, and an error in the job itself fails it. It reports whether the
// worker may take the next job of a batch.
func (d *Dispatcher) recordFailure(ctx, kernelCtx context.Context, j *job.Job, err error, log zerolog.Logger) bool {
	var werr *wire.Error
	var noRoom *NoRoomError
	switch {
	case kernelCtx.Err() != nil:
		// Shutting down: the store re-queues running jobs when it opens.
		log.Info().Msg("kernel stopping; job will be re-queued on restart")
		return false
	case errors.Is(context.Cause(ctx), errPreempted):
		d.preempted(j, context.Cause(ctx), log)
		return false
	case ctx.Err() != nil:
		log.Info().Msg("job cancelled")
		if c := (*cancelledJob)(nil); errors.As(context.Cause(ctx), &c) {
			d.finished(c.job)
		} else {
			d.finishedID(j.ID)
		}
	case errors.As(err, &noRoom):
		if fj, ferr := d.opts.Store.Fail(j.ID, noRoom.Error()); ferr == nil {
			d.finished(fj)
		}
		log.Warn().Err(err).Msg("job cannot fit on its device")
	case errors.As(err, &werr) && (werr.Code == wire.ErrCodeFailed || werr.Code == wire.ErrCodeBadRequest || werr.Code == wire.ErrCodeUnsupported):
		if fj, ferr := d.opts.Store.Fail(j.ID, werr.Message); ferr == nil {
			d.finished(fj)
		}
		log.Warn().Err(err).Msg("job failed")
	default:
		// The worker died, timed out or lost a model: not the job's fault,
		// so it goes back to the queue until it has used its attempts.
		nj, rerr := d.opts.Store.Requeue(j.ID, err.Error())
		if rerr != nil {
			log.Warn().Err(rerr).Msg("re-queue job")
			return false
		}
		if nj.State == job.Failed {
			d.finished(nj)
		} else {
			d.publish(job.Event{Type: job.EventRequeued, JobID: j.ID, ClientID: j.ClientID, Attempt: j.Attempts, Error: err.Error()})
		}
		log.Warn().Err(err).Str("state", string(nj.State)).Msg("attempt lost; job re-queued")
		return false
	}
	return true
}

// preempt stops a running job when the scheduling policy plans it
// (Core.Preempt) for a waiting job of a higher class and no worker is idle.
// One preemption is in flight at a time: the worker it frees goes to the
// waiting job through the ordinary dispatch round before anything else is
// stopped. The attempt's end (execute) gives the job back to the queue.
func (d *Dispatcher) preempt() {
	if !d.opts.Preemption {
		return
	}
	if _, ok := d.core.Scheduler.(decision.Planner); !ok {
		return // spares the snapshots below
	}
	workers := d.workerViews()
	for _, w := range workers {
		if w.Idle {
			return
		}
	}
	running, busy := d.runningViews()
	if busy {
		return
	}
	// Most rounds end here, before the queue snapshot and the policy
	// call: only an interactive job waiting while a batch job has run
	// long enough can lead to a preemption (Core.Preempt's rules).
	ripe := false
	for _, r := range running {
		ripe = ripe || (r.Class != job.Interactive && r.RunTime >= d.opts.PreemptMinRun)
	}
	if !ripe || d.opts.Store.QueuedLen(job.Interactive) == 0 {
		return
	}
	queued := d.queuedViews(decision.QueueWindow)
	p, ok, fault := d.core.Preempt(queued, running, workers, d.opts.PreemptMinRun)
	if fault != nil {
		d.log.Error().Err(fault).Msg("ignoring the scheduling policy's preemptions")
	}
	if !ok {
		return
	}
	d.mu.Lock()
	rj := d.running[p.JobID]
	if rj == nil || rj.worker != p.Worker || rj.preempting {
		// It ended since the snapshot: its worker is free anyway.
		d.mu.Unlock()
		return
	}
	rj.preempting = true
	d.mu.Unlock()
	d.log.Info().Str("job", p.JobID).Str("worker", p.Worker).Str("for", p.For).Msg("preempting")
	rj.cancel(fmt.Errorf("%w (%s)", errPreempted, p.For))
}

// runningViews describes the running jobs for Core.Preempt. busy is true
// while a preemption is in flight.
func (d *Dispatcher) runningViews() (views []decision.JobView, busy bool) {
	now := d.clk.Now()
	var jobs []*job.Job
	d.mu.Lock()
	for id, rj := range d.running {
		if rj.preempting {
			d.mu.Unlock()
			return nil, true
		}
		j := rj.job
		jobs = append(jobs, j)
		views = append(views, decision.JobView{
			// Seq is the submission order here: running jobs have no
			// place in the queue, and policies compare them by age.
			ID: id, Class: j.Class, Seq: j.Seq, Age: now.Sub(j.CreatedAt), DeadlineMS: j.DeadlineMS,
			Models: j.Models, Attempts: j.Attempts, BatchKey: BatchKey(j.Models),
			Running: true, Worker: rj.worker, RunTime: now.Sub(rj.started),
			// The worker checks for a cancel between steps, so a running
			// graph stops at its next step boundary; a job still loading
			// its models has no step to lose but its loads.
			AtStepBoundary: d.progress[id].Phase == "running",
		})
	}
	d.mu.Unlock()
	// Outside d.mu: an estimate not made yet reads the graph from the store.
	for i, j := range jobs {
		views[i].EstimatedCost = d.estimates.of(d, j)
	}
	// Map order is random; a policy deserves a stable input.
	sort.Slice(views, func(a, b int) bool { return views[a].Seq < views[b].Seq })
	return views, false
}

// preempted gives a job whose attempt a preemption ended back to the queue.
// A job cancelled or finished meanwhile stays as the store has it.
func (d *Dispatcher) preempted(j *job.Job, cause error, log zerolog.Logger) {
	nj, err := d.opts.Store.Preempt(j.ID)
	if err != nil {
		if cur, gerr := d.opts.Store.Get(j.ID); gerr == nil && cur.State != job.Queued && cur.State != job.Running {
			d.finished(cur)
		}
		log.Info().Err(err).Msg("preempted job is no longer running")
		return
	}
	if d.opts.Hooks.JobPreempted != nil {
		d.opts.Hooks.JobPreempted(nj)
	}
	d.publish(job.Event{Type: job.EventPreempted, JobID: j.ID, ClientID: j.ClientID, Worker: j.Worker, Attempt: j.Attempts,
		Error: cause.Error()})
	log.Info().Int("preemptions", nj.Preemptions).Msg("job preempted; back in the queue at its place")
}

// finished reports a job that reached a terminal state to the hooks and
// the event subscribers: j is the job as the store committed it (the
// transition's result), so nobody reads it back.
func (d *Dispatcher) finished(j *job.Job) {
	if d.opts.Hooks.JobFinished != nil {
		d.opts.Hooks.JobFinished(j)
	}
	d.publish(job.Event{Type: job.EventFinished, JobID: j.ID, ClientID: j.ClientID, Worker: j.Worker, Attempt: j.Attempts,
		State: j.State, Outputs: j.Outputs, Error: j.Error, Job: j})
}

// finishedID is finished for a job whose end another caller committed (a
// cancellation of a running job, which Cancel recorded): it reads the job
// from the store.
func (d *Dispatcher) finishedID(id string) {
	if j, err := d.opts.Store.Get(id); err == nil {
		d.finished(j)
	}
}

func (d *Dispatcher) setProgress(id string, p Progress) {
	d.mu.Lock()
	if _, ok := d.running[id]; ok {
		d.progress[id] = p
	}
	d.mu.Unlock()
}

// NoRoomError says a job's models cannot fit on a device even with every
// unpinned model evicted and no other job holding memory there.
type NoRoomError struct {
	Device int
	Need   uint64
	Usable uint64
}

func (e *NoRoomError) Error() string {
	if e.Device < 0 {
		return fmt.Sprintf("the job's models need %s of VRAM but the largest device has %s usable", human(e.Need), human(e.Usable))
	}
	return fmt.Sprintf("the job's models need %s of VRAM but device %d has %s usable", human(e.Need), e.Device, human(e.Usable))
}

func human(b uint64) string {
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

// ErrVRAMWait is returned (wrapped) when a started job has waited
// Options.VRAMWait for VRAM that running jobs hold: the attempt is lost
// and the job goes back to the queue.
var ErrVRAMWait = errors.New("gave up waiting for vram")

// load makes one model resident in a worker: through the tiers when kiln has
// them (the bytes climb to an L2 segment, which the worker maps read-only),
// else from the catalog's file. With spec.ConvertTo set the segment holds
// the model converted to that dtype (tier.Manager.AcquireConverted); with
// spec.VRAMBudget set the worker keeps only that much of it on the device
// and streams the rest (protocol 1.2).
func (d *Dispatcher) load(ctx context.Context, w *worker.Worker, e catalog.Entry, spec loadSpec) (wire.LoadReply, error) {
	req := wire.LoadRequest{Model: e.ID, Path: e.Path, Bytes: e.Bytes, Family: e.Family, WeightDType: spec.WeightDType,
		VRAMBudgetBytes: spec.VRAMBudget}
	if d.opts.Tiers != nil {
		acquire := d.opts.Tiers.Acquire
		if spec.ConvertTo != "" {
			acquire = func(ctx context.Context, id string) (*tier.Lease, error) {
				return d.opts.Tiers.AcquireConverted(ctx, id, spec.ConvertTo)
			}
		}
		lease, err := acquire(ctx, e.ID)
		if err != nil {
			return wire.LoadReply{}, fmt.Errorf("model %s: %w", e.ID, err)
		}
		// The segment is pinned only while the worker maps it: once the
		// load is answered the worker holds its own mapping (an evicted
		// segment's pages live until the worker unmaps them), so L2 need not
		// be as large as every worker's VRAM put together.
		defer lease.Release()
		req.Path, req.Bytes = lease.Path(), lease.Bytes()
	}
	return w.Load(ctx, req)
}

// abandon forgets an entry whose load was never started, waking anyone who
// waits on it with err.
func (d *Dispatcher) abandon(w *worker.Worker, rm *residentModel, err error) {
	d.mu.Lock()
	rm.loadErr = err
	if rm.loading != nil {
		close(rm.loading)
		rm.loading = nil
	}
	d.mu.Unlock()
	d.drop(w, rm)
}

// drop forgets a model whose load failed and gives its VRAM back.
func (d *Dispatcher) drop(w *worker.Worker, rm *residentModel) {
	d.mu.Lock()
	if byModel := d.resident[w.ID()]; byModel != nil && byModel[rm.model] == rm {
		delete(byModel, rm.model)
	}
	d.mu.Unlock()
	if rm.res != nil {
		d.opts.Devices.Ledger(w.Device().Index).Release(rm.res)
	}
}

// reserve takes VRAM for a model on the worker's device through the
// decision core (Core.Reserve), which evicts unpinned models of the
// device's workers through the evictor when it must. When running jobs'
// pins stand in the way it returns a channel closed at the next unpin.
func (d *Dispatcher) reserve(ctx context.Context, w *worker.Worker, model string, bytes uint64) (*device.Reservation, <-chan struct{}, error) {
	dev := w.Device().Index
	var keys []entryKey
	var spare bool // kept models count as pinned: they go last
	room := Room{
		Device: dev,
		Ledger: d.opts.Devices.Ledger(dev),
		List: func() ([]decision.EntryView, uint64) {
			var entries []decision.EntryView
			var pinned uint64
			entries, keys, pinned = d.entriesOf(dev, spare)
			// Contexts and activations wait to be let go like pins.
			return entries, pinned + HeldBytes(d.opts.Devices.Ledger(dev))
		},
		Evict: func(i int) { d.evict(ctx, keys[i].worker, keys[i].model) },
	}
	// The wait channel is taken before trying, so that an unpin between a
	// failed try and the wait is not missed.
	d.mu.Lock()
	ch := d.unpinned
	d.mu.Unlock()
	// First without the models running jobs keep from finished stages,
	// then, if only they and pins stand in the way, with them.
	spare = true
	res, err := d.core.Reserve(room, w.ID(), model, bytes)
	if errors.Is(err, ErrVRAMHeld) && d.keptOn(dev) {
		spare = false
		res, err = d.core.Reserve(room, w.ID(), model, bytes)
	}
	if errors.Is(err, ErrVRAMHeld) {
		return nil, ch, err
	}
	return res, nil, err
}

// fitsWhole reports whether plan's models and largest activations fit w's
// device together beside its workers' contexts: a node admitting whole
// jobs would hold them all for the job's run.
func (d *Dispatcher) fitsWhole(w *worker.Worker, plan Plan) bool {
	dev := w.Device().Index
	workers := 0
	for _, o := range d.opts.Pool.Workers() {
		if o.Device().Index == dev {
			workers++
		}
	}
	contexts := uint64(workers) * d.opts.WorkerContextBytes
	usable := d.opts.Devices.Ledger(dev).Usable()
	return contexts < usable && plan.Whole() <= usable-contexts
}

// keptOn reports whether a running job keeps a model of a finished stage
// on device dev.
func (d *Dispatcher) keptOn(dev int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.opts.Pool.Workers() {
		if w.Device().Index != dev {
			continue
		}
		for _, rm := range d.resident[w.ID()] {
			if rm.kept > 0 && rm.pins == 0 {
				return true
			}
		}
	}
	return false
}

type entryKey struct {
	worker *worker.Worker
	model  string
}

// deviceEntries lists every model resident on a device's workers.
func (d *Dispatcher) deviceEntries(dev int) ([]decision.EntryView, []entryKey, uint64) {
	return d.entriesOf(dev, false)
}

// entriesOf is deviceEntries, with the models running jobs keep from
// finished stages shown pinned when spare is set (reserve's first pass).
func (d *Dispatcher) entriesOf(dev int, spare bool) ([]decision.EntryView, []entryKey, uint64) {
	var entries []decision.EntryView
	var keys []entryKey
	var pinnedBytes uint64
	now := d.clk.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.opts.Pool.Workers() {
		if w.Device().Index != dev {
			continue
		}
		for m, rm := range d.resident[w.ID()] {
			var b uint64
			if rm.res != nil {
				b = rm.res.Bytes()
			}
			pinned := rm.pins > 0 || rm.loading != nil || (spare && rm.kept > 0)
			if pinned {
				pinnedBytes += b
			}
			entries = append(entries, decision.EntryView{Model: m, Worker: w.ID(), Bytes: b, LastUse: rm.lastUse, Hits: rm.hits, Pinned: pinned,
				Inserted: rm.inserted, LoadCost: rm.loadTook, RecentDemand: d.opts.Demand.Of(now, m)})
			keys = append(keys, entryKey{worker: w, model: m})
		}
	}
	SortEntries(entries, keys)
	return entries, keys, pinnedBytes
}

// evict unloads a model from a worker and releases its VRAM. It re-checks the
// pin under the lock, so a model that was pinned since the policy looked is
// left alone.
func (d *Dispatcher) evict(ctx context.Context, w *worker.Worker, model string) {
	d.mu.Lock()
	rm := d.resident[w.ID()][model]
	if rm == nil || rm.pins > 0 || rm.loading != nil {
		d.mu.Unlock()
		return
	}
	delete(d.resident[w.ID()], model)
	d.mu.Unlock()
	if _, err := w.Unload(ctx, model); err != nil {
		d.log.Warn().Err(err).Str("model", model).Str("worker", w.ID()).Msg("unload")
	}
	if rm.res != nil {
		d.opts.Devices.Ledger(w.Device().Index).Release(rm.res)
	}
	if d.opts.Hooks.ModelEvicted != nil {
		d.opts.Hooks.ModelEvicted(model)
	}
	d.log.Debug().Str("model", model).Str("worker", w.ID()).Msg("evicted")
}

func (d *Dispatcher) unpin(workerID string, models []string) {
	if len(models) == 0 {
		return
	}
	d.mu.Lock()
	for _, m := range models {
		if rm := d.resident[workerID][m]; rm != nil && rm.pins > 0 {
			rm.pins--
		}
	}
	d.mu.Unlock()
	d.signalUnpin()
}

func (d *Dispatcher) signalUnpin() {
	d.mu.Lock()
	close(d.unpinned)
	d.unpinned = make(chan struct{})
	d.mu.Unlock()
}
