package tier

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
)

// ErrNoRoom is wrapped when a tier cannot make room: the model is larger
// than the tier, or pinned entries hold the space.
var ErrNoRoom = errors.New("no room in tier")

// Stats are one tier's figures, as GET /v1/tiers shows them.
type Stats struct {
	Name          string `json:"name"`
	CapacityBytes int64  `json:"capacity_bytes"`
	UsedBytes     int64  `json:"used_bytes"`
	Entries       int    `json:"entries"`
	Hits          uint64 `json:"hits"`
	Misses        uint64 `json:"misses"`
	// BytesIn were written into the tier, BytesOut read out of it.
	BytesIn   uint64 `json:"bytes_in"`
	BytesOut  uint64 `json:"bytes_out"`
	Evictions uint64 `json:"evictions"`
	// Corrupt counts entries dropped because their bytes did not verify.
	Corrupt uint64 `json:"corrupt"`
	// BandwidthBytesPerS is the measured rate of transfers into the tier.
	BandwidthBytesPerS float64 `json:"bandwidth_bytes_per_s"`
}

// entry is one file in a store, named by its sha256.
type entry struct {
	sum     string
	model   string
	size    int64
	pins    int
	hits    int
	lastUse time.Time
	// inserted and loadCost are what cost-aware eviction policies (GDSF)
	// weigh: when the entry arrived and what bringing it back would cost.
	inserted time.Time
	loadCost time.Duration
}

// store is one file-backed tier (L3 or L2): capacity, pins and eviction.
type store struct {
	name    string
	dir     string
	cap     int64
	target  float64
	evictor decision.Evictor
	clk     clock.Clock
	// demand is Options.Demand (nil: none).
	demand func(now time.Time, model string) float64
	log    zerolog.Logger

	mu       sync.Mutex
	entries  map[string]*entry
	used     int64 // bytes of entries plus reservations
	st       Stats
	bwSample bool
}

// recentDemand is Options.Demand's count for model, 0 without one.
func (s *store) recentDemand(now time.Time, model string) float64 {
	if s.demand == nil {
		return 0
	}
	return s.demand(now, model)
}

func newStore(name, dir string, capBytes int64, target float64, ev decision.Evictor, clk clock.Clock, log zerolog.Logger, demand func(time.Time, string) float64) *store {
	return &store{demand: demand, name: name, dir: dir, cap: capBytes, target: target, evictor: ev, clk: clk, log: log,
		entries: map[string]*entry{}, st: Stats{Name: name, CapacityBytes: capBytes}}
}

func (s *store) path(sum string) string { return filepath.Join(s.dir, sum) }

// get pins and returns the entry for sum; count says whether to count the
// lookup as a hit or a miss (a lookup after a promotion does not count).
func (s *store) get(sum string, count bool) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[sum]
	if e == nil {
		if count {
			s.st.Misses++
		}
		return nil
	}
	if count {
		// A lookup this tier answered: a hit for the stats and for the
		// entry (EntryView.Hits, ABI §9). The look after a promotion the
		// caller's own miss brought in is neither.
		s.st.Hits++
		e.hits++
	}
	e.pins++
	e.lastUse = s.clk.Now()
	return e
}

func (s *store) unpin(e *entry) {
	s.mu.Lock()
	if e.pins > 0 {
		e.pins--
	}
	s.mu.Unlock()
}

// reserve makes room for size bytes, evicting unpinned entries down to the
// target fill level; the caller then add()s the entry or unreserve()s.
func (s *store) reserve(size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if size > s.cap {
		return fmt.Errorf("tier %s: %d bytes exceed the capacity of %d: %w", s.name, size, s.cap, ErrNoRoom)
	}
	// First toward the target fill; then, when the policy's victims fell
	// short of what the entry needs (none, or too few: a policy may answer
	// the wish short where the unpinned entries cannot reach it), for
	// exactly the rest. The policy host holds that second answer to the
	// need: one that frees too little while the unpinned entries could is
	// a stall fault, answered by the native policy (issue 21).
	target := int64(float64(s.cap) * s.target)
	for round := 0; round < 2 && s.used+size > s.cap; round++ {
		need := s.used + size - s.cap // the target is a wish
		if round == 0 {
			need = s.used + size - min(target, s.cap-size)
		}
		views := make([]decision.EntryView, 0, len(s.entries))
		keys := make([]string, 0, len(s.entries))
		for k := range s.entries {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		now := s.clk.Now()
		for _, k := range keys {
			e := s.entries[k]
			views = append(views, decision.EntryView{Model: e.model, Worker: s.name, Bytes: uint64(e.size), LastUse: e.lastUse, Hits: e.hits, Pinned: e.pins > 0,
				Inserted: e.inserted, LoadCost: e.loadCost, RecentDemand: s.recentDemand(now, e.model)})
		}
		victims := s.evictor.Victims(uint64(need), views)
		for _, i := range victims {
			if i < 0 || i >= len(views) || views[i].Pinned {
				s.log.Error().Int("index", i).Str("tier", s.name).Msg("evictor chose an invalid or pinned entry; ignoring its answer")
				victims = nil
				break
			}
		}
		for _, i := range victims {
			s.dropLocked(keys[i], true)
		}
	}
	if s.used+size > s.cap {
		var pinned int64
		for _, e := range s.entries {
			if e.pins > 0 {
				pinned += e.size
			}
		}
		return fmt.Errorf("tier %s: need %d bytes, %d of %d used, %d of them pinned: %w", s.name, size, s.used, s.cap, pinned, ErrNoRoom)
	}
	s.used += size
	return nil
}

func (s *store) unreserve(size int64) {
	s.mu.Lock()
	s.used -= size
	s.mu.Unlock()
}

// add records a file already renamed into place under a reservation, pinned
// once for the caller.
func (s *store) add(sum, model string, size int64, took time.Duration) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.entries[sum]; old != nil {
		s.used -= size // the reservation was not needed
		old.pins++
		return old
	}
	now := s.clk.Now()
	e := &entry{sum: sum, model: model, size: size, pins: 1, lastUse: now, inserted: now, loadCost: took}
	s.entries[sum] = e
	s.st.BytesIn += uint64(size)
	s.sampleLocked(size, took)
	return e
}

// adopt records a file found at start (not pinned, not counted as bytes in).
func (s *store) adopt(sum string, size int64, mtime time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+size > s.cap {
		return false
	}
	s.entries[sum] = &entry{sum: sum, size: size, lastUse: mtime}
	s.used += size
	return true
}

func (s *store) sampleLocked(size int64, took time.Duration) {
	if size < 64<<10 || took <= 0 {
		return
	}
	bw := float64(size) / took.Seconds()
	if !s.bwSample {
		s.st.BandwidthBytesPerS, s.bwSample = bw, true
		return
	}
	s.st.BandwidthBytesPerS = 0.7*s.st.BandwidthBytesPerS + 0.3*bw
}

// drop removes an entry whether pinned or not (corrupt bytes are never
// served); eviction uses dropLocked with evicted=true on unpinned ones only.
func (s *store) drop(sum string, corrupt bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if corrupt {
		s.st.Corrupt++
	}
	s.dropLocked(sum, false)
}

func (s *store) dropLocked(sum string, evicted bool) {
	e := s.entries[sum]
	if e == nil {
		return
	}
	delete(s.entries, sum)
	s.used -= e.size
	if evicted {
		s.st.Evictions++
	}
	if err := os.Remove(s.path(sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn().Err(err).Str("tier", s.name).Msg("remove evicted file")
	}
	s.log.Debug().Str("tier", s.name).Str("model", e.model).Str("sha256", sum).Bool("evicted", evicted).Msg("dropped entry")
}

func (s *store) readOut(n int64) {
	s.mu.Lock()
	s.st.BytesOut += uint64(n)
	s.mu.Unlock()
}

func (s *store) stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Entries = len(s.entries)
	var used int64
	for _, e := range s.entries {
		used += e.size
	}
	st.UsedBytes = used
	return st
}

// has reports whether sum is present, without counting a hit.
func (s *store) has(sum string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[sum] != nil
}

func (s *store) miss() {
	s.mu.Lock()
	s.st.Misses++
	s.mu.Unlock()
}
