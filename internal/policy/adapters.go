package policy

import (
	"context"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// fallbackNames are the built-ins whose native builds answer for a policy
// that faults: one source, two targets — the same policies/* code whose
// WASM build is the default, compiled into the kernel, decides on the same
// ABI input the faulting module was given.
var fallbackNames = map[abi.Kind]string{
	abi.KindScheduling: "priority",
	abi.KindBalancing:  "least-loaded",
	abi.KindEviction:   "lru",
	abi.KindBatching:   "none",
	abi.KindRouting:    "least-loaded",
}

// fallbacks are their native instances; the built-ins keep no state in
// the instance (ABI §7), so one each serves every call.
var fallbacks = func() map[abi.Kind]any {
	m := map[abi.Kind]any{}
	for k, name := range fallbackNames {
		m[k] = Builtin(k, name)
	}
	return m
}()

// fallback answers in with the native build of kind op.kind's fallback
// built-in, with its own defaults (the faulting policy's parameters and
// state words mean nothing to it). An answer that does not pass the
// host's checks is taken as no decision.
func fallback[I, O any](op *ops[I, O], in *I, out *O) abi.Status {
	c := op.common(in)
	c.Params, c.State = nil, [4]uint64{}
	op.reset(out)
	st := op.native(fallbacks[op.kind], in, out)
	if st == abi.StatusOK && op.valid(in, out) != nil {
		return abi.StatusNoDecision
	}
	return st
}

// Interface guards.
var (
	_ decision.Scheduler = (*Scheduler)(nil)
	_ decision.Balancer  = (*Balancer)(nil)
	_ decision.Evictor   = (*Evictor)(nil)
	_ decision.Batcher   = (*Batcher)(nil)
	// The dispatcher finds these by type assertion; a signature that drifts
	// would silently turn preemption and prefetch off.
	_ decision.Planner    = (*Scheduler)(nil)
	_ decision.Prefetcher = (*Evictor)(nil)
)

// conv turns dispatch views into ABI inputs, reusing its buffers; models,
// batch keys and workers are numbered into small dense ids per decision.
type conv struct {
	models  interner
	keys    interner
	workers interner
	infos   []abi.ModelInfo
	sc      scratch
	// views are the workers of the decision, numbered lazily: only a
	// running job's worker needs a lookup by name.
	views   []decision.WorkerView
	indexed bool

	sched  abi.SchedulingInput
	schedO abi.SchedulingOutput
	bal    abi.BalancingInput
	balO   abi.BalancingOutput
	bat    abi.BatchingInput
	batO   abi.BatchingOutput
	ev     abi.EvictionInput
	evO    abi.EvictionOutput
}

var convPool = sync.Pool{New: func() any { return &conv{} }}

func getConv() *conv {
	c := convPool.Get().(*conv)
	c.models.reset()
	c.keys.reset()
	c.workers.reset()
	c.infos = c.infos[:0]
	c.views, c.indexed = nil, false
	return c
}

func putConv(c *conv) {
	c.views = nil
	convPool.Put(c)
}

// interner numbers names 0, 1, 2… in the order a decision first asks for
// them. Its map outlives the decision: each slot remembers the decision
// (generation) that last numbered it, so a new decision costs one counter
// increment instead of clearing the map and inserting every name again —
// the conversion of the dispatcher's views was most of a decision's time.
type interner struct {
	slots map[string]*internSlot
	gen   uint64
	n     uint32
}

type internSlot struct {
	gen uint64
	id  uint32
}

// maxInterned bounds the names an interner remembers between decisions
// (model names come and go with the catalog).
const maxInterned = 4096

func (t *interner) reset() {
	t.gen++
	t.n = 0
	if t.slots == nil || len(t.slots) > maxInterned {
		t.slots = make(map[string]*internSlot)
	}
}

// id returns name's number in this decision and whether it is new.
func (t *interner) id(name string) (uint32, bool) {
	s := t.slots[name]
	if s == nil {
		s = &internSlot{}
		t.slots[name] = s
	}
	if s.gen != t.gen {
		s.gen, s.id = t.gen, t.n
		t.n++
		return s.id, true
	}
	return s.id, false
}

// lookup returns name's number if this decision has given it one.
func (t *interner) lookup(name string) (uint32, bool) {
	if s := t.slots[name]; s != nil && s.gen == t.gen {
		return s.id, true
	}
	return 0, false
}

func (c *conv) model(name string, bytes uint64, load time.Duration) uint32 {
	id, fresh := c.models.id(name)
	if fresh {
		c.infos = append(c.infos, abi.ModelInfo{Bytes: bytes, LoadCost: load})
		return id
	}
	mi := &c.infos[id]
	if mi.Bytes == 0 {
		mi.Bytes = bytes
	}
	if mi.LoadCost == 0 {
		mi.LoadCost = load
	}
	return id
}

// workerIndex returns the index of the decision's worker named id.
func (c *conv) workerIndex(id string) (uint32, bool) {
	if !c.indexed {
		c.indexed = true
		for i := range c.views {
			c.workers.id(c.views[i].ID) // numbered in order: the id is i
		}
	}
	return c.workers.lookup(id)
}

func (c *conv) job(dst *abi.Job, j *decision.JobView) {
	models := dst.Models[:0]
	for i, m := range j.Models {
		var b uint64
		var l time.Duration
		if i < len(j.ModelBytes) {
			b = j.ModelBytes[i]
		}
		if i < len(j.LoadCost) {
			l = j.LoadCost[i]
		}
		models = append(models, c.model(m, b, l))
	}
	class := abi.ClassBatch
	if j.Class == job.Interactive {
		class = abi.ClassInteractive
	}
	var key uint32
	if j.BatchKey != "" {
		// Keys start at 1: 0 means the job batches with nothing.
		id, _ := c.keys.id(j.BatchKey)
		key = id + 1
	}
	w := abi.NoWorker
	if j.Running {
		if id, ok := c.workerIndex(j.Worker); ok {
			w = id
		}
	}
	// The fields that need interning or deriving; jobViewFields
	// (views_gen.go) copies the rest.
	*dst = abi.Job{Class: class, HasDeadline: j.DeadlineMS > 0, BatchKey: key, Models: models, Worker: w}
	jobViewFields(dst, j)
	if dst.HasDeadline {
		dst.Slack = time.Duration(j.DeadlineMS)*time.Millisecond - j.Age
	}
}

func (c *conv) workerList(dst []abi.Worker, ws []decision.WorkerView) []abi.Worker {
	c.views, c.indexed = ws, false
	dst = grow(dst, len(ws))
	for i := range ws {
		w := &ws[i]
		res := dst[i].Resident[:0]
		for _, r := range w.Resident {
			res = append(res, c.model(r.Model, uint64(max(r.Bytes, 0)), 0))
		}
		dst[i] = abi.Worker{Resident: res}
		workerViewFields(&dst[i], w)
	}
	return dst
}

func grow[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return append(s[:cap(s)], make([]T, n-cap(s))...)
}

// onFault counts a fault; it is a no-op for nil errors.
func (h *Host) onFault(v *version, err error) bool {
	if err == nil {
		return false
	}
	h.fault(v, err)
	return true
}

// Scheduler is the decision.Scheduler backed by the active scheduling
// policy. Get it from Host.Scheduler.
type Scheduler struct{ h *Host }

// Plan is a scheduling decision: queued jobs to dispatch, best first, and
// running jobs to preempt.
type Plan struct {
	Dispatch []string
	Preempt  []string
	// Fallback is true when the native fallback answered.
	Fallback bool
}

// Next returns the first job of the active policy's plan.
func (s *Scheduler) Next(queued []decision.JobView, workers []decision.WorkerView) (string, bool) {
	p := s.Plan(queued, nil, workers)
	if len(p.Dispatch) == 0 {
		return "", false
	}
	return p.Dispatch[0], true
}

// Plan asks the active scheduling policy for its full decision, including
// preemptions of running jobs.
func (s *Scheduler) Plan(queued, running []decision.JobView, workers []decision.WorkerView) Plan {
	h := s.h
	v := h.slots[abi.KindScheduling].active.Load()
	c := getConv()
	defer putConv(c)
	in := &c.sched
	in.Workers = c.workerList(in.Workers, workers)
	in.Queued = grow(in.Queued, len(queued))
	for i := range queued {
		c.job(&in.Queued[i], &queued[i])
	}
	in.Running = grow(in.Running, len(running))
	for i := range running {
		c.job(&in.Running[i], &running[i])
	}
	in.Models = c.infos
	st, err := decide(context.Background(), h, v, schedulingOps, in, &c.schedO, &c.sc)
	var p Plan
	if h.onFault(v, err) {
		st, p.Fallback = fallback(schedulingOps, in, &c.schedO), true
	}
	if st != abi.StatusOK {
		return p
	}
	p.Dispatch = make([]string, 0, len(c.schedO.Dispatch))
	for _, i := range c.schedO.Dispatch {
		p.Dispatch = append(p.Dispatch, queued[i].ID)
	}
	for _, i := range c.schedO.Preempt {
		p.Preempt = append(p.Preempt, running[i].ID)
	}
	return p
}

// PlanIDs is Plan in types the dispatcher owns, so that it can find it by
// type assertion without importing this package: the queued jobs to
// dispatch, best first, and the running jobs to preempt at their next step
// boundary.
func (s *Scheduler) PlanIDs(queued, running []decision.JobView, workers []decision.WorkerView) (next, preempt []string) {
	p := s.Plan(queued, running, workers)
	return p.Dispatch, p.Preempt
}

// Balancer is the decision.Balancer backed by the active balancing policy.
type Balancer struct{ h *Host }

// Place returns the worker the active policy chose for j.
func (b *Balancer) Place(j decision.JobView, workers []decision.WorkerView) (string, bool) {
	h := b.h
	v := h.slots[abi.KindBalancing].active.Load()
	c := getConv()
	defer putConv(c)
	in := &c.bal
	in.Workers = c.workerList(in.Workers, workers)
	c.job(&in.Job, &j)
	in.Models = c.infos
	st, err := decide(context.Background(), h, v, balancingOps, in, &c.balO, &c.sc)
	if h.onFault(v, err) {
		st = fallback(balancingOps, in, &c.balO)
	}
	if st != abi.StatusOK {
		return "", false
	}
	return workers[c.balO.Worker].ID, true
}

// Batcher is the decision.Batcher backed by the active batching policy.
type Batcher struct{ h *Host }

// Batch returns the jobs that run with lead, lead first, or a wait.
func (b *Batcher) Batch(lead decision.JobView, queued []decision.JobView, workers []decision.WorkerView) ([]string, time.Duration) {
	h := b.h
	v := h.slots[abi.KindBatching].active.Load()
	c := getConv()
	defer putConv(c)
	in := &c.bat
	in.Workers = c.workerList(in.Workers, workers)
	jobs := queued
	li := -1
	for i := range queued {
		if queued[i].ID == lead.ID {
			li = i
			break
		}
	}
	if li < 0 {
		jobs = append(append(make([]decision.JobView, 0, len(queued)+1), queued...), lead)
		li = len(queued)
	}
	in.Jobs = grow(in.Jobs, len(jobs))
	for i := range jobs {
		c.job(&in.Jobs[i], &jobs[i])
	}
	in.Lead = uint32(li)
	in.Models = c.infos
	st, err := decide(context.Background(), h, v, batchingOps, in, &c.batO, &c.sc)
	if h.onFault(v, err) {
		st = fallback(batchingOps, in, &c.batO)
	}
	if st != abi.StatusOK {
		return []string{lead.ID}, 0 // no company: the lead runs alone
	}
	ids := make([]string, 0, len(c.batO.Batch))
	for _, i := range c.batO.Batch {
		ids = append(ids, jobs[i].ID)
	}
	return ids, c.batO.Wait
}

// Evictor is the decision.Evictor backed by the active eviction policy. It
// keeps what eviction policies need across decisions: each entry's tag and
// a ghost list of recent evictions.
type Evictor struct {
	h      *Host
	mu     sync.Mutex
	tags   map[entryKey]uint64
	ghosts []ghost
	// state is this cache's state words, and owner the version that wrote
	// them and the tags: a cache's words mean something only to the
	// policy version that keeps them there (GDSF's inflation clock is one
	// cache's clock), so both start again at zero when another version
	// decides here (ABI 1.1, section 9). Ghosts are the cache's own
	// history and stay.
	state [4]uint64
	owner *version
}

type ghost struct {
	model string
	at    time.Time
}

const maxGhosts = 256

// WantedModel is a model queued jobs need that is not cached: a prefetch
// candidate.
type WantedModel struct {
	Model    string
	Bytes    uint64
	LoadCost time.Duration
	Waiting  int
}

// EvictionRequest asks for victims so that Need more bytes fit where Free
// bytes are free now.
type EvictionRequest struct {
	Need    uint64
	Free    uint64
	Entries []decision.EntryView
	Wanted  []WantedModel
}

// EvictionResult names victims (indices into Entries) and models to
// prefetch. Victims is nil when no set of unpinned entries is enough.
type EvictionResult struct {
	Victims  []int
	Prefetch []string
	Fallback bool
}

// PrefetchIDs asks the active eviction policy which of the models queued
// jobs want — wanted[i], of wantedBytes[i] bytes, waited for by waiting[i]
// jobs — to bring into a cache now, where free bytes are free and entries
// are resident: the prefetch half of an eviction decision with nothing to
// make room for, in the dispatcher's own types so that it can find it by
// type assertion. It evicts nothing; the slices must be of one length.
func (e *Evictor) PrefetchIDs(free uint64, entries []decision.EntryView, wanted []string, wantedBytes []uint64, waiting []int) []string {
	if len(wantedBytes) != len(wanted) || len(waiting) != len(wanted) {
		return nil
	}
	ws := make([]WantedModel, len(wanted))
	for i, m := range wanted {
		ws[i] = WantedModel{Model: m, Bytes: wantedBytes[i], Waiting: waiting[i]}
	}
	return e.Decide(EvictionRequest{Free: free, Entries: entries, Wanted: ws}).Prefetch
}

// NewEvictor returns another decision.Evictor (and decision.Evictor) backed by
// the active eviction policy, with its own tags and ghost list: one per
// cache (each cache tier, VRAM), because what a policy remembers about one
// cache's entries and evictions means nothing for another's.
func (h *Host) NewEvictor() *Evictor { return &Evictor{h: h, tags: map[entryKey]uint64{}} }

// Victims implements decision.Evictor.
func (e *Evictor) Victims(need uint64, entries []decision.EntryView) []int {
	return e.Decide(EvictionRequest{Need: need, Entries: entries}).Victims
}

// entryKey names a cache entry for its tag; a struct, not a joined string,
// so that looking a tag up allocates nothing.
type entryKey struct{ worker, model string }

func keyOf(en *decision.EntryView) entryKey { return entryKey{en.Worker, en.Model} }

// Decide asks the active eviction policy, with prefetch candidates.
func (e *Evictor) Decide(r EvictionRequest) EvictionResult {
	h := e.h
	v := h.slots[abi.KindEviction].active.Load()
	c := getConv()
	defer putConv(c)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.owner != v {
		e.owner, e.state = v, [4]uint64{}
		clear(e.tags)
	}
	c.sc.state = &e.state
	defer func() { c.sc.state = nil }()
	now := h.clk.Now()
	in := &c.ev
	in.Need, in.Free = r.Need, r.Free
	in.Entries = grow(in.Entries, len(r.Entries))
	in.RecentDemand = grow(in.RecentDemand, len(r.Entries))
	for i := range r.Entries {
		en := &r.Entries[i]
		in.RecentDemand[i] = en.RecentDemand
		ins := en.Inserted
		if ins.IsZero() {
			ins = en.LastUse
		}
		w, _ := c.workers.id(en.Worker)
		// Names interned, times made ages; entryViewFields (views_gen.go)
		// copies the rest.
		in.Entries[i] = abi.Entry{Model: c.model(en.Model, en.Bytes, en.LoadCost), Worker: w,
			SinceUse: max(now.Sub(en.LastUse), 0), SinceInsert: max(now.Sub(ins), 0), Tag: e.tags[keyOf(en)]}
		entryViewFields(&in.Entries[i], en)
	}
	in.Ghosts = in.Ghosts[:0]
	for _, g := range e.ghosts {
		in.Ghosts = append(in.Ghosts, abi.Ghost{Model: c.model(g.model, 0, 0), Ago: max(now.Sub(g.at), 0)})
	}
	in.Wanted = grow(in.Wanted, len(r.Wanted))
	for i, w := range r.Wanted {
		in.Wanted[i] = abi.Wanted{Model: c.model(w.Model, w.Bytes, w.LoadCost), Bytes: w.Bytes, LoadCost: w.LoadCost, Waiting: uint32(max(w.Waiting, 0))}
	}
	st, err := decide(context.Background(), h, v, evictionOps, in, &c.evO, &c.sc)
	var res EvictionResult
	if h.onFault(v, err) {
		st, res.Fallback = fallback(evictionOps, in, &c.evO), true
	}
	if st != abi.StatusOK {
		return res
	}
	for _, t := range c.evO.Tags {
		e.tags[keyOf(&r.Entries[t.Entry])] = t.Tag
	}
	for _, i := range c.evO.Victims {
		en := &r.Entries[i]
		res.Victims = append(res.Victims, int(i))
		delete(e.tags, keyOf(en))
		e.ghosts = append(e.ghosts, ghost{model: en.Model, at: now})
	}
	if len(e.ghosts) > maxGhosts {
		e.ghosts = append(e.ghosts[:0], e.ghosts[len(e.ghosts)-maxGhosts:]...)
	}
	for _, i := range c.evO.Prefetch {
		res.Prefetch = append(res.Prefetch, r.Wanted[i].Model)
	}
	if len(e.tags) > 2*len(r.Entries)+64 {
		// Entries that left without being evicted by us keep stale tags.
		keep := make(map[entryKey]uint64, len(r.Entries))
		for i := range r.Entries {
			if t, ok := e.tags[keyOf(&r.Entries[i])]; ok {
				keep[keyOf(&r.Entries[i])] = t
			}
		}
		e.tags = keep
	}
	if res.Victims == nil && r.Need > r.Free {
		return EvictionResult{Fallback: res.Fallback}
	}
	return res
}
