package shadow

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
)

// Limits that bound the work one access can cost.
const (
	// MaxModelsPerAccess caps the models of one access that are replayed.
	MaxModelsPerAccess = 32
	// MaxEntries caps the entries of one ghost tier (an eviction decision
	// is linear in them).
	MaxEntries = 4096
)

// Decider asks a policy for victims: indices into entries whose bytes
// together free at least need. A nil answer with a nil error means the
// policy found no set (the model then bypasses the tier); an error is a
// policy fault.
type Decider func(need uint64, entries []decision.EntryView) ([]int, error)

// Candidate is one eviction policy to shadow. New is called once per ghost
// tier so that each tier has its own policy state; the io.Closer (may be
// nil) releases it.
type Candidate struct {
	Name string
	// Live marks the candidate that matches the live policy, so that the
	// report can show the others against it.
	Live bool
	New  func() (Decider, io.Closer, error)
}

// FromEvictor is a candidate over any decision.Evictor, such as a native
// built-in from policy.Native. Faults cannot be seen through
// decision.Evictor; a panic is one.
func FromEvictor(name string, ev decision.Evictor) Candidate {
	return Candidate{Name: name, New: func() (Decider, io.Closer, error) {
		return func(need uint64, entries []decision.EntryView) (victims []int, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("evictor panicked: %v", r)
				}
			}()
			return ev.Victims(need, entries), nil
		}, nil, nil
	}}
}

// Device is one GPU as the ghosts see it.
type Device struct {
	Name string
	// VRAMBytes is the usable VRAM (after the ledger's headroom).
	VRAMBytes uint64
}

// Topology is the live node's cache geometry. A zero RAMBytes or DiskBytes
// means the node has no such tier (models load straight from the source).
type Topology struct {
	Devices   []Device
	RAMBytes  uint64
	DiskBytes uint64
}

// Bandwidths are the measured transfer rates into each tier, in bytes/s; a
// zero rate charges no time (the report says the time is then unknown).
type Bandwidths struct {
	// H2D is per device: RAM (or disk) → VRAM.
	H2D []float64
	// RAM is disk → RAM; Disk is remote source → disk.
	RAM  float64
	Disk float64
}

// Sources are what the shadow asks the node while replaying.
type Sources struct {
	// Model returns a model's file size and its VRAM footprint.
	Model func(id string) (fileBytes, vramBytes uint64, ok bool)
	// Bandwidth returns the current measured rates.
	Bandwidth func() Bandwidths
	// Demand, when set, is the kernel's recent demand for a model as of
	// now (internal/predict.Demand.Of, ABI 1.3): the ghost entries carry
	// it as the live tiers' do, so a candidate that evicts by it (the
	// built-in "demand") is judged on what it would see live. Nil: 0.
	Demand func(now time.Time, model string) float64
}

// Shadow replays accesses into every candidate's ghost hierarchy. It is
// safe for concurrent use; accesses are applied one at a time.
type Shadow struct {
	clk  clock.Clock
	src  Sources
	topo Topology

	mu       sync.Mutex
	cands    []*hierarchy
	accesses uint64
	dropped  uint64
	unknown  uint64
	since    time.Time
	lastAt   time.Time
	busy     time.Duration // accumulated replay time, to report overhead
}

// hierarchy is one candidate's ghosts.
type hierarchy struct {
	name    string
	live    bool
	vram    []*ghost
	ram     *ghost // nil without a RAM tier
	disk    *ghost // nil without a disk tier
	faulted bool
	fault   string
	closers []io.Closer
}

// New builds a shadow with one hierarchy per candidate. A candidate whose
// evictor cannot be built is reported faulted rather than failing the rest.
func New(cands []Candidate, topo Topology, src Sources, clk clock.Clock) (*Shadow, error) {
	if clk == nil {
		return nil, errors.New("shadow: nil clock")
	}
	if src.Model == nil {
		return nil, errors.New("shadow: no model source")
	}
	if src.Bandwidth == nil {
		src.Bandwidth = func() Bandwidths { return Bandwidths{} }
	}
	s := &Shadow{clk: clk, src: src, topo: topo, since: clk.Now()}
	seen := map[string]bool{}
	for _, c := range cands {
		if seen[c.Name] {
			continue
		}
		seen[c.Name] = true
		h := &hierarchy{name: c.Name, live: c.Live}
		build := func(name string, capacity uint64) *ghost {
			g := &ghost{tier: name, capacity: capacity, index: map[string]int{}, demand: src.Demand}
			if h.faulted {
				return g
			}
			d, cl, err := c.New()
			if err != nil {
				h.faulted, h.fault = true, fmt.Sprintf("%s: start: %v", name, err)
				return g
			}
			if cl != nil {
				h.closers = append(h.closers, cl)
			}
			g.decide = d
			return g
		}
		for i, d := range topo.Devices {
			h.vram = append(h.vram, build("vram:"+strconv.Itoa(i), d.VRAMBytes))
		}
		if topo.RAMBytes > 0 {
			h.ram = build("ram", topo.RAMBytes)
		}
		if topo.DiskBytes > 0 {
			h.disk = build("disk", topo.DiskBytes)
		}
		s.cands = append(s.cands, h)
	}
	return s, nil
}

// Close releases every candidate's evictors.
func (s *Shadow) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, h := range s.cands {
		for _, c := range h.closers {
			errs = append(errs, c.Close())
		}
		h.closers = nil
	}
	return errors.Join(errs...)
}

// Dropped counts accesses the feed lost (the event bus dropped them, or
// the job could not be resolved); the report carries it.
func (s *Shadow) Dropped(n uint64) {
	s.mu.Lock()
	s.dropped += n
	s.mu.Unlock()
}

// Access replays one job's model accesses on device dev, now, without
// telling workers apart. See AccessOn.
func (s *Shadow) Access(dev int, models []string) { s.AccessOn(dev, "", models) }

// AccessOn replays one job's model accesses by worker on device dev, now.
// VRAM residency is per worker, as live: a model another worker on the same
// device holds is a miss, and its second copy takes room on the device.
func (s *Shadow) AccessOn(dev int, worker string, models []string) {
	now := s.clk.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if dev < 0 || dev >= len(s.topo.Devices) {
		s.unknown++
		return
	}
	s.accesses++
	s.lastAt = now
	bw := s.src.Bandwidth()
	var h2d float64
	if dev < len(bw.H2D) {
		h2d = bw.H2D[dev]
	}
	type model struct {
		id         string
		file, vram uint64
	}
	ms := make([]model, 0, min(len(models), MaxModelsPerAccess))
	for _, id := range models {
		if len(ms) == MaxModelsPerAccess {
			break
		}
		if slices.ContainsFunc(ms, func(m model) bool { return m.id == id }) {
			continue
		}
		file, vram, ok := s.src.Model(id)
		if !ok {
			s.unknown++
			continue
		}
		ms = append(ms, model{id, file, vram})
	}
	pinned := make([]string, 0, len(ms))
	for _, h := range s.cands {
		if h.faulted {
			continue
		}
		pinned = pinned[:0]
		for _, m := range ms {
			pinned = append(pinned, m.id)
			err := h.access(dev, worker, m.id, m.file, m.vram, now, bw, h2d, pinned)
			if err != nil {
				h.faulted, h.fault = true, err.Error()
				break
			}
		}
	}
	s.busy += s.clk.Since(now)
}

// access climbs one candidate's hierarchy for one model. pinned holds the
// models of the same job already placed: they must stay while the rest of
// the job's models are made room for, as live.
func (h *hierarchy) access(dev int, worker, id string, file, vram uint64, now time.Time, bw Bandwidths, h2d float64, pinned []string) error {
	if h.vram[dev].hit(worker, id, now) {
		return nil
	}
	// Below VRAM: the RAM tier, then disk, then the source. Host tiers are
	// shared by every worker.
	if h.ram == nil || !h.ram.hit("", id, now) {
		if h.disk == nil || !h.disk.hit("", id, now) {
			if h.disk != nil {
				if err := h.disk.insert("", id, file, now, transfer(file, bw.Disk), pinned); err != nil {
					return err
				}
			}
		}
		if h.ram != nil {
			if err := h.ram.insert("", id, file, now, transfer(file, bw.RAM), pinned); err != nil {
				return err
			}
		}
	}
	return h.vram[dev].insert(worker, id, vram, now, transfer(vram, h2d), pinned)
}

func transfer(bytes uint64, rate float64) time.Duration {
	if !(rate > 0) {
		return 0
	}
	return time.Duration(float64(bytes) / rate * float64(time.Second))
}

// ghost is one tier of one candidate: metadata only.
type ghost struct {
	tier     string
	capacity uint64
	decide   Decider
	// demand is Sources.Demand (nil: none).
	demand func(now time.Time, model string) float64

	entries []gentry
	index   map[string]int
	used    uint64
	views   []decision.EntryView // reused per decision

	hits, misses, evictions, bypassed uint64
	bytesLoaded                       uint64
	loadTime                          time.Duration
}

type gentry struct {
	owner    string // the worker holding it in VRAM; "" in host tiers
	model    string
	bytes    uint64
	lastUse  time.Time
	inserted time.Time
	hits     int
	loadCost time.Duration
}

func key(owner, model string) string { return owner + "\x00" + model }

// hit looks owner's copy of id up, counting a hit or a miss.
func (g *ghost) hit(owner, id string, now time.Time) bool {
	if i, ok := g.index[key(owner, id)]; ok {
		e := &g.entries[i]
		e.lastUse = now
		e.hits++
		g.hits++
		return true
	}
	g.misses++
	return false
}

// insert loads id into the ghost after a miss, charging cost, and asks the
// policy for room when the tier is full. A model that cannot fit (larger
// than the tier, or the policy finds no victims) passes through uncached,
// as a live load that bypasses the tier would.
func (g *ghost) insert(owner, id string, bytes uint64, now time.Time, cost time.Duration, pinned []string) error {
	g.bytesLoaded += bytes
	g.loadTime += cost
	if bytes > g.capacity || g.decide == nil {
		g.bypassed++
		return nil
	}
	for g.used+bytes > g.capacity || len(g.entries) >= MaxEntries {
		need := g.used + bytes - min(g.capacity, g.used+bytes)
		if len(g.entries) >= MaxEntries {
			need = max(need, 1)
		}
		victims, err := g.ask(need, owner, pinned, now)
		if err != nil {
			return fmt.Errorf("%s: %w", g.tier, err)
		}
		if len(victims) == 0 {
			g.bypassed++
			return nil
		}
		g.remove(victims)
	}
	g.index[key(owner, id)] = len(g.entries)
	g.entries = append(g.entries, gentry{owner: owner, model: id, bytes: bytes, lastUse: now, inserted: now, loadCost: cost})
	g.used += bytes
	return nil
}

// ask runs one decision and checks its answer the way a live tier does: an
// index out of range, repeated or pinned is a fault; too few bytes is no
// answer.
func (g *ghost) ask(need uint64, owner string, pinned []string, now time.Time) ([]string, error) {
	g.views = g.views[:0]
	for _, e := range g.entries {
		w := e.owner
		if w == "" {
			w = g.tier
		}
		g.views = append(g.views, decision.EntryView{Model: e.model, Worker: w, Bytes: e.bytes, LastUse: e.lastUse,
			Hits: e.hits, Pinned: e.owner == owner && slices.Contains(pinned, e.model), Inserted: e.inserted, LoadCost: e.loadCost})
		if g.demand != nil {
			g.views[len(g.views)-1].RecentDemand = g.demand(now, e.model)
		}
	}
	idx, err := g.decide(need, g.views)
	if err != nil {
		return nil, err
	}
	var freed uint64
	seen := make(map[int]bool, len(idx))
	out := make([]string, 0, len(idx))
	for _, i := range idx {
		if i < 0 || i >= len(g.views) || seen[i] || g.views[i].Pinned {
			return nil, fmt.Errorf("invalid victim %d of %d entries", i, len(g.views))
		}
		seen[i] = true
		freed += g.views[i].Bytes
		out = append(out, key(g.entries[i].owner, g.entries[i].model))
	}
	if freed < need {
		return nil, nil
	}
	return out, nil
}

func (g *ghost) remove(keys []string) {
	for _, k := range keys {
		i, ok := g.index[k]
		if !ok {
			continue
		}
		g.used -= g.entries[i].bytes
		// Delete in place, keeping the order of the rest: evictors that
		// break ties by position see the same order a live tier would.
		g.entries = slices.Delete(g.entries, i, i+1)
		delete(g.index, k)
		for j := i; j < len(g.entries); j++ {
			g.index[key(g.entries[j].owner, g.entries[j].model)] = j
		}
		g.evictions++
	}
}
