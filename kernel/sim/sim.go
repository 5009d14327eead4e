package sim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/kiln-gpu/kiln/kernel/clock"
	"github.com/kiln-gpu/kiln/kernel/cost"
	"github.com/kiln-gpu/kiln/kernel/device"
	"github.com/kiln-gpu/kiln/kernel/dispatch"
	"github.com/kiln-gpu/kiln/kernel/policy"
	"github.com/kiln-gpu/kiln/kernel/workflow"
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
	start := wall.Now()
	if err := s.run(ctx); err != nil {
		return nil, err
	}
	return s.report(wall.Since(start), opts.Seed), nil
}

// simulator is one run's state.
type simulator struct {
	cfg    Config
	clk    *clock.Fake
	now    time.Duration
	host   *policy.Host
	sched  dispatch.Scheduler
	bal    dispatch.Balancer
	evict  dispatch.Evictor
	models map[string]Model
	sizes  []Model

	jobs    []*simJob
	queue   []*simJob // queued, in arrival (Seq) order
	events  eventHeap
	evSeq   uint64
	workers []*simWorker
	byID    map[string]*simWorker
	devices []*simDevice
	blocked bool // a job waits for VRAM held by running jobs: retry after a completion

	ram, disk *lruTier
	vram      TierStats
	remote    TierStats
	coldLoads int64
	loadTime  time.Duration
	uses      []use // every job start, for the offline optimum
	firstUse  map[string]bool
}

type simJob struct {
	id       string
	seq      uint64
	req      *Request
	models   []string // deduplicated
	sizes    []uint64
	vram     uint64
	work     cost.Work
	estimate time.Duration

	start, done time.Duration
	load        time.Duration
	compute     time.Duration
	loads       int
	device      int
	state       jobState
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
}

type simWorker struct {
	id        string
	dev       int
	job       *simJob
	busyUntil time.Duration
	resident  map[string]*resident
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
	models []string
	cold   []bool // index for index: the model's first use on the node
}

func newSimulator(ctx context.Context, cfg Config, models []Model, trace *Trace, opts Options) (*simulator, error) {
	s := &simulator{
		cfg:      cfg,
		clk:      clock.NewFake(epoch),
		models:   make(map[string]Model, len(models)),
		sizes:    slices.Clone(models),
		byID:     map[string]*simWorker{},
		ram:      newLRUTier(cfg.RAMBytes),
		disk:     newLRUTier(cfg.DiskBytes),
		firstUse: map[string]bool{},
	}
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
	for i := range trace.Requests {
		r := &trace.Requests[i]
		j := &simJob{id: fmt.Sprintf("j%06d", i), seq: uint64(i + 1), req: r}
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
			j.vram += b
		}
		j.work = s.work(j)
		j.estimate = cfg.Cost.JobEstimate(j.work, cost.Device{})
		s.jobs = append(s.jobs, j)
		s.push(event{at: r.Time, kind: evArrive, job: j})
	}
	host, err := policy.NewHost(cfg.Policies, opts.Log, s.clk)
	if err != nil {
		return nil, fmt.Errorf("sim: policy host: %w", err)
	}
	// Built-ins compile to WASM in the background; wait so that every
	// decision of the run comes from the same build.
	if err := host.WaitReady(ctx); err != nil {
		host.Close()
		return nil, fmt.Errorf("sim: policy host: %w", err)
	}
	s.host = host
	s.sched, s.bal, s.evict = host.Scheduler(), host.Balancer(), host.Evictor()
	return s, nil
}

// Default sampling where a request has no workflow: 20 steps at the
// family's reference size (512² for SD1.5, 1024² for the others).
const defaultSteps = 20

// work is the compute a job asks for, for the cost model.
func (s *simulator) work(j *simJob) cost.Work {
	base := ""
	var loras, upscalers int
	for _, id := range j.models {
		f := s.models[id].Family
		switch f {
		case workflow.FamilyLoRA:
			loras++
		case workflow.FamilyUpscaler:
			upscalers++
		}
		if _, known := s.cfg.Cost.Lookup(f); known && base == "" {
			base = f
		}
	}
	size := 1024
	if base == workflow.FamilySD15 {
		size = 512
	}
	var w cost.Work
	if base == "" && upscalers > 0 && len(j.req.Samplers) == 0 {
		// An upscale-only job.
		w = cost.Work{}
	} else if len(j.req.Samplers) == 0 {
		w = cost.TextToImage(base, defaultSteps, size, size, 1)
	} else {
		w = cost.Work{Family: base}
		for _, p := range j.req.Samplers {
			fam := base
			if p.Model != "" && p.Family != "" {
				fam = p.Family
			}
			w.TextEncodes += 2
			w.Samplers = append(w.Samplers, cost.Sample{Family: fam, Steps: p.Steps, Width: p.Width, Height: p.Height, Batch: p.BatchSize})
			w.Decodes = append(w.Decodes, cost.Image{Family: fam, Width: p.Width, Height: p.Height, Batch: p.BatchSize})
			size = p.Width
		}
	}
	w.LoRAs = loras
	for range upscalers {
		w.Upscales = append(w.Upscales, cost.Image{Width: 4 * size, Height: 4 * size, Batch: 1})
	}
	return w
}

// Events. At equal times, events run in the order they were scheduled.
type evKind int

const (
	evArrive evKind = iota
	evDone
)

type event struct {
	at   time.Duration
	seq  uint64
	kind evKind
	job  *simJob
	w    *simWorker
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

// advance moves virtual time, and the clock the policies read, to t.
func (s *simulator) advance(t time.Duration) {
	if t > s.now {
		s.clk.Advance(t - s.now)
		s.now = t
	}
}

// run processes events until none are left: all events due at one instant
// first, then a dispatch round, as the live dispatcher wakes on each change.
func (s *simulator) run(ctx context.Context) error {
	for n := 0; s.events.Len() > 0; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		t := s.events[0].at
		s.advance(t)
		for s.events.Len() > 0 && s.events[0].at == t {
			e := heap.Pop(&s.events).(event)
			switch e.kind {
			case evArrive:
				e.job.state = jobQueued
				s.queue = append(s.queue, e.job)
			case evDone:
				s.finish(e.w)
			}
		}
		s.dispatch()
	}
	for _, j := range s.queue {
		// Left behind: only possible when a job waits for VRAM that no
		// completion will free. Count it as failed rather than hang.
		j.state = jobFailed
	}
	s.queue = nil
	return nil
}

// dispatch starts jobs while a worker is idle and jobs are queued.
func (s *simulator) dispatch() {
	for !s.blocked && len(s.queue) > 0 && s.anyIdle() {
		queued := s.queuedViews()
		workers := s.workerViews()
		j, w, ok := s.choose(queued, workers)
		if !ok {
			return
		}
		s.start(j, w)
	}
}

func (s *simulator) anyIdle() bool {
	for _, w := range s.workers {
		if w.job == nil {
			return true
		}
	}
	return false
}

// choose mirrors dispatch.Dispatcher.choose: ask the scheduler, then the
// balancer; a job the balancer cannot place is set aside for this round; a
// job no device could ever hold fails at once.
func (s *simulator) choose(queued []dispatch.JobView, workers []dispatch.WorkerView) (*simJob, *simWorker, bool) {
	var maxUsable uint64
	for _, w := range workers {
		maxUsable = max(maxUsable, w.UsableVRAM)
	}
	for len(queued) > 0 {
		id, ok := s.sched.Next(queued, workers)
		if !ok {
			return nil, nil, false
		}
		i := slices.IndexFunc(queued, func(j dispatch.JobView) bool { return j.ID == id })
		if i < 0 {
			return nil, nil, false
		}
		jv := queued[i]
		j := s.queuedJob(id)
		if maxUsable > 0 && jv.EstimatedVRAM > maxUsable {
			s.dequeue(j)
			j.state = jobFailed
		} else if wid, ok := s.bal.Place(jv, workers); ok {
			if w := s.byID[wid]; w != nil && w.job == nil {
				return j, w, true
			}
		}
		queued = slices.Delete(slices.Clone(queued), i, i+1)
	}
	return nil, nil, false
}

func (s *simulator) queuedJob(id string) *simJob {
	for _, j := range s.queue {
		if j.id == id {
			return j
		}
	}
	return nil
}

func (s *simulator) dequeue(j *simJob) {
	if i := slices.Index(s.queue, j); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
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

func (s *simulator) queuedViews() []dispatch.JobView {
	n := min(len(s.queue), s.cfg.QueueView)
	out := make([]dispatch.JobView, 0, n)
	for _, j := range s.queue[:n] {
		loads := make([]time.Duration, len(j.models))
		for i, m := range j.models {
			loads[i] = s.loadCost(m, cost.Device{})
		}
		out = append(out, dispatch.JobView{
			ID: j.id, Class: j.req.Class, Seq: j.seq, Age: s.now - j.req.Time, DeadlineMS: j.req.DeadlineMS,
			Models: j.models, EstimatedVRAM: j.vram, ModelBytes: j.sizes, LoadCost: loads, EstimatedCost: j.estimate,
		})
	}
	return out
}

func (s *simulator) workerViews() []dispatch.WorkerView {
	out := make([]dispatch.WorkerView, 0, len(s.workers))
	for _, d := range s.devices {
		busy := 0
		for _, w := range d.workers {
			if w.job != nil {
				busy++
			}
		}
		for _, w := range d.workers {
			res := make(map[string]int64, len(w.resident))
			for m, r := range w.resident {
				if !r.fresh {
					res[m] = int64(r.bytes)
				}
			}
			v := dispatch.WorkerView{
				ID: w.id, Device: d.index, Idle: w.job == nil, DeviceBusy: busy, Resident: res,
				FreeVRAM: d.ledger.Free(), UsableVRAM: d.ledger.Usable(), H2DBytesPerS: uint64(d.cfg.H2DBytesPerS),
			}
			if w.job != nil {
				v.EstimatedWait = max(w.busyUntil-s.now, 0)
			}
			out = append(out, v)
		}
	}
	return out
}

// errWait means a reservation must wait for running jobs to unpin VRAM.
var errWait = errors.New("waiting for vram held by running jobs")

// start makes j's models resident on w and schedules its completion.
func (s *simulator) start(j *simJob, w *simWorker) {
	d := s.devices[w.dev]
	s.dequeue(j)
	var pinned, fresh []string
	undo := func() {
		for _, m := range fresh {
			r := w.resident[m]
			d.ledger.Release(r.res)
			delete(w.resident, m)
		}
		for _, m := range pinned {
			w.resident[m].pins--
		}
	}
	for i, m := range j.models {
		if r, ok := w.resident[m]; ok {
			r.pins++
			pinned = append(pinned, m)
			continue
		}
		res, err := s.reserve(d, w, m, j.sizes[i])
		if err != nil {
			undo()
			if errors.Is(err, errWait) {
				// Back into the queue in arrival order; retried after the
				// next completion frees pinned VRAM.
				i, _ := slices.BinarySearchFunc(s.queue, j.seq, func(q *simJob, seq uint64) int { return cmpU64(q.seq, seq) })
				s.queue = slices.Insert(s.queue, i, j)
				s.blocked = true
			} else {
				j.state = jobFailed
			}
			return
		}
		w.resident[m] = &resident{bytes: j.sizes[i], res: res, pins: 1, fresh: true}
		fresh = append(fresh, m)
	}
	// Every model is reserved: charge the loads, tier by tier.
	var load time.Duration
	use := use{device: w.dev, models: j.models, cold: make([]bool, len(j.models))}
	for i, m := range j.models {
		r := w.resident[m]
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
			use.cold[i] = true
		}
		lt := s.fetch(m, d.cost)
		r.fresh = false
		r.inserted, r.lastUse, r.loadCost = s.now, s.now, lt
		load += lt
		j.loads++
		s.coldLoads++
	}
	s.uses = append(s.uses, use)
	s.loadTime += load
	j.start, j.load, j.device = s.now, load, w.dev
	j.compute = s.cfg.Cost.JobEstimate(j.work, d.cost)
	j.done = s.now + load + j.compute
	j.state = jobRunning
	w.job, w.busyUntil = j, j.done
	if j.compute > 0 {
		d.busy = append(d.busy, interval{s.now + load, j.done})
	}
	s.push(event{at: j.done, kind: evDone, job: j, w: w})
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
// passed on the way keeps a copy (inclusive tiers, as kernel/tier).
func (s *simulator) fetch(m string, dev cost.Device) time.Duration {
	mod := s.models[m]
	c := s.cfg.Cost
	if s.ram.lookup(m, mod.Bytes) {
		return c.TransferTime(mod.Bytes, dev)
	}
	if s.disk.lookup(m, mod.Bytes) {
		s.ram.insert(m, mod.Bytes)
		return c.LoadTime(mod.Family, mod.Bytes, dev)
	}
	s.remote.Hits++
	s.remote.Bytes += mod.Bytes
	s.disk.insert(m, mod.Bytes)
	s.ram.insert(m, mod.Bytes)
	return s.remoteTime(mod.Bytes) + c.LoadTime(mod.Family, mod.Bytes, dev)
}

// reserve mirrors dispatch.Dispatcher.reserve: take VRAM on the device's
// ledger, asking the evictor for unpinned victims among the device's
// workers when the ledger refuses.
func (s *simulator) reserve(d *simDevice, w *simWorker, model string, bytes uint64) (*device.Reservation, error) {
	for attempt := 0; ; attempt++ {
		res, err := d.ledger.Reserve(w.id, model, bytes)
		if err == nil {
			return res, nil
		}
		if bytes > d.ledger.Usable() {
			return nil, fmt.Errorf("device %d: %s needs %s, more than the usable %s", d.index, model,
				device.FormatBytes(bytes), device.FormatBytes(d.ledger.Usable()))
		}
		entries, keys, pinnedBytes := s.deviceEntries(d)
		need := bytes - min(bytes, d.ledger.Free())
		victims := s.evict.Victims(need, entries)
		valid := len(victims) > 0
		for _, i := range victims {
			if i < 0 || i >= len(entries) || entries[i].Pinned {
				valid = false
				break
			}
		}
		if !valid || attempt > 8 {
			if pinnedBytes == 0 && attempt > 8 {
				return nil, fmt.Errorf("device %d: no room for %s", d.index, model)
			}
			return nil, errWait
		}
		for _, i := range victims {
			k := keys[i]
			r := k.w.resident[k.model]
			d.ledger.Release(r.res)
			delete(k.w.resident, k.model)
			s.vram.Evictions++
			s.vram.EvictedBytes += int64(r.bytes)
		}
	}
}

type entryKey struct {
	w     *simWorker
	model string
}

// deviceEntries lists the models resident on a device's workers, sorted by
// worker then model (a stable input, as the live dispatcher gives).
func (s *simulator) deviceEntries(d *simDevice) ([]dispatch.EntryView, []entryKey, uint64) {
	var entries []dispatch.EntryView
	var keys []entryKey
	var pinnedBytes uint64
	for _, w := range d.workers { // workers are in id order
		ms := make([]string, 0, len(w.resident))
		for m := range w.resident {
			ms = append(ms, m)
		}
		sort.Strings(ms)
		for _, m := range ms {
			r := w.resident[m]
			pinned := r.pins > 0
			if pinned {
				pinnedBytes += r.bytes
			}
			entries = append(entries, dispatch.EntryView{Model: m, Worker: w.id, Bytes: r.bytes,
				LastUse: epoch.Add(r.lastUse), Hits: r.hits, Pinned: pinned,
				Inserted: epoch.Add(r.inserted), LoadCost: r.loadCost})
			keys = append(keys, entryKey{w: w, model: m})
		}
	}
	return entries, keys, pinnedBytes
}

// finish ends the job running on w.
func (s *simulator) finish(w *simWorker) {
	j := w.job
	for _, m := range j.models {
		if r, ok := w.resident[m]; ok {
			r.pins--
			r.lastUse = s.now
		}
	}
	j.state = jobDone
	w.job = nil
	s.blocked = false
}
