package shadow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
)

const gib = 1 << 30

// sizes: every model is 1 GiB on disk and 2 GiB in VRAM unless named big.
func sources(bw Bandwidths) Sources {
	return Sources{
		Model: func(id string) (uint64, uint64, bool) {
			switch {
			case strings.HasPrefix(id, "big"):
				return 4 * gib, 8 * gib, true
			case strings.HasPrefix(id, "unknown"):
				return 0, 0, false
			}
			return gib, 2 * gib, true
		},
		Bandwidth: func() Bandwidths { return bw },
	}
}

func find(t *testing.T, r Report, name string) CandidateReport {
	t.Helper()
	for _, c := range r.Candidates {
		if c.Policy == name {
			return c
		}
	}
	t.Fatalf("no candidate %s in %+v", name, r)
	return CandidateReport{}
}

func tierOf(t *testing.T, c CandidateReport, name string) TierReport {
	t.Helper()
	for _, tr := range c.Tiers {
		if tr.Tier == name {
			return tr
		}
	}
	t.Fatalf("no tier %s in %+v", name, c)
	return TierReport{}
}

// mru evicts the most recently used entry: on a cyclic pattern one larger
// than the cache it keeps hitting where LRU always misses.
type mru struct{}

func (mru) Victims(need uint64, entries []decision.EntryView) []int {
	best := -1
	for i, e := range entries {
		if !e.Pinned && (best < 0 || e.LastUse.After(entries[best].LastUse)) {
			best = i
		}
	}
	if best < 0 || entries[best].Bytes < need {
		return nil
	}
	return []int{best}
}

func TestCyclicPatternLRUVersusMRU(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	// VRAM holds two 2 GiB models; RAM and disk hold everything.
	topo := Topology{Devices: []Device{{Name: "gpu0", VRAMBytes: 4 * gib}}, RAMBytes: 16 * gib, DiskBytes: 64 * gib}
	bw := Bandwidths{H2D: []float64{2 * gib}, RAM: 1 * gib, Disk: 0.5 * gib}
	s, err := New([]Candidate{FromEvictor("lru", policy.Native().NewEvictor()), FromEvictor("mru", mru{})}, topo, sources(bw), clk)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A B C A B C … twelve accesses.
	for i := 0; i < 12; i++ {
		clk.Advance(time.Second)
		s.Access(0, []string{string(rune('A' + i%3))})
	}
	r := s.Report()
	lru, m := find(t, r, "lru"), find(t, r, "mru")
	// LRU evicts exactly the model needed next: 12 misses.
	if lru.Hits != 0 || lru.Misses != 12 || lru.Evictions != 10 {
		t.Errorf("lru: %+v", lru)
	}
	// MRU by hand (cache of two): 1 A miss; 2 B miss; 3 C miss, evicts B;
	// 4 A hit; 5 B miss, evicts A; 6 C hit; 7 A miss, evicts C; 8 B hit;
	// 9 C miss, evicts B; 10 A hit; 11 B miss, evicts A; 12 C hit: 5 hits.
	if m.Hits != 5 || m.Misses != 7 {
		t.Errorf("mru: hits %d misses %d", m.Hits, m.Misses)
	}
	if r.Candidates[0].Policy != "mru" {
		t.Errorf("report not sorted by hit ratio: %+v", r.Candidates)
	}
	// Below VRAM: three cold misses per tier, then RAM hits.
	ram, disk := tierOf(t, lru, "ram"), tierOf(t, lru, "disk")
	if ram.Misses != 3 || ram.Hits != 9 || disk.Misses != 3 || disk.Hits != 0 {
		t.Errorf("ram %+v disk %+v", ram, disk)
	}
	// Load time: 12 VRAM loads of 2 GiB at 2 GiB/s, 3 RAM loads of 1 GiB at
	// 1 GiB/s, 3 disk fetches of 1 GiB at 0.5 GiB/s = 12 + 3 + 6 s.
	if lru.LoadTimeS != 21 {
		t.Errorf("lru load time %v, want 21", lru.LoadTimeS)
	}
	if want := uint64(12*2*gib + 3*gib + 3*gib); lru.BytesLoaded != want {
		t.Errorf("bytes loaded %d, want %d", lru.BytesLoaded, want)
	}
}

func TestJobModelsArePinnedAndOversizeBypasses(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	topo := Topology{Devices: []Device{{VRAMBytes: 5 * gib}}}
	s, _ := New([]Candidate{FromEvictor("lru", policy.Native().NewEvictor())}, topo, sources(Bandwidths{}), clk)
	// One job needs three 2 GiB models on a 5 GiB device: the third cannot
	// evict the first two (pinned by the same job), so it bypasses.
	s.Access(0, []string{"a", "b", "c"})
	vram := tierOf(t, find(t, s.Report(), "lru"), "vram:0")
	if vram.Entries != 2 || vram.Bypassed != 1 || vram.Evictions != 0 {
		t.Errorf("pinned: %+v", vram)
	}
	s.Access(0, []string{"big1"}) // 8 GiB > 5 GiB
	s.Access(0, []string{"unknown1"})
	s.Access(3, []string{"a"}) // no such device
	r := s.Report()
	vram = tierOf(t, find(t, r, "lru"), "vram:0")
	if vram.Bypassed != 2 || r.Unknown != 2 || r.Accesses != 3 {
		t.Errorf("bypass: %+v; report %+v", vram, r)
	}
}

// faulty answers with a fault on its third decision.
func faulty(kind string) Candidate {
	return Candidate{Name: "faulty-" + kind, New: func() (Decider, io.Closer, error) {
		n := 0
		return func(need uint64, entries []decision.EntryView) ([]int, error) {
			n++
			if n < 3 {
				return policy.Native().NewEvictor().Victims(need, entries), nil
			}
			switch kind {
			case "trap":
				return nil, errors.New("wasm trap: unreachable")
			case "pinned":
				for i, e := range entries {
					if e.Pinned {
						return []int{i}, nil
					}
				}
				return []int{0, 0}, nil // repeated index
			default:
				return []int{len(entries)}, nil // out of range
			}
		}, nil, nil
	}}
}

func TestFaultMarksOnlyThatCandidate(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	topo := Topology{Devices: []Device{{VRAMBytes: 4 * gib}}}
	cands := []Candidate{FromEvictor("lru", policy.Native().NewEvictor()), faulty("trap"), faulty("pinned"), faulty("range"),
		{Name: "broken", New: func() (Decider, io.Closer, error) { return nil, nil, errors.New("no such module") }}}
	s, _ := New(cands, topo, sources(Bandwidths{}), clk)
	for i := 0; i < 20; i++ {
		clk.Advance(time.Second)
		s.Access(0, []string{fmt.Sprint("m", i%5), fmt.Sprint("m", (i+1)%5)})
	}
	r := s.Report()
	if lru := find(t, r, "lru"); lru.Faulted || lru.Hits+lru.Misses != 40 {
		t.Errorf("lru: %+v", lru)
	}
	for _, name := range []string{"faulty-trap", "faulty-pinned", "faulty-range", "broken"} {
		c := find(t, r, name)
		if !c.Faulted || c.Fault == "" || c.Hits+c.Misses >= 40 {
			t.Errorf("%s should have faulted early: %+v", name, c)
		}
	}
	if r.Candidates[0].Policy != "lru" {
		t.Errorf("faulted candidates must sort last: %+v", r.Candidates[0])
	}
}

func TestBuiltinPolicyCandidates(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	cands := PolicyCandidates(nil, nil, zerolog.Nop(), clk)
	if len(cands) < 3 {
		t.Fatalf("want every built-in eviction policy, got %d", len(cands))
	}
	topo := Topology{Devices: []Device{{VRAMBytes: 10 * gib}, {VRAMBytes: 10 * gib}}, RAMBytes: 12 * gib, DiskBytes: 40 * gib}
	bw := Bandwidths{H2D: []float64{10 * gib, 10 * gib}, RAM: 2 * gib, Disk: 0.2 * gib}
	run := func() Report {
		s, err := New(PolicyCandidates(nil, nil, zerolog.Nop(), clk), topo, sources(bw), clk)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		rng := rand.New(rand.NewPCG(1, 2))
		z := rand.NewZipf(rng, 1.1, 1, 39)
		for i := 0; i < 2000; i++ {
			clk.Advance(time.Duration(rng.IntN(5000)) * time.Millisecond)
			models := []string{fmt.Sprint("ckpt", z.Uint64())}
			if rng.IntN(4) == 0 {
				models = append(models, fmt.Sprint("big", rng.IntN(3)))
			}
			s.Access(rng.IntN(2), models)
		}
		return s.Report()
	}
	a, b := run(), run()
	for i := range a.Candidates {
		ca, cb := a.Candidates[i], b.Candidates[i]
		if !reflect.DeepEqual(ca, cb) {
			t.Errorf("not deterministic: %+v vs %+v", ca, cb)
		}
		if ca.Faulted {
			t.Errorf("built-in %s faulted: %s", ca.Policy, ca.Fault)
		}
		if ca.Hits+ca.Misses == 0 || ca.Evictions == 0 {
			t.Errorf("%s did no work: %+v", ca.Policy, ca)
		}
		t.Logf("%-8s vram hit ratio %.3f, load %.0f s, evictions %d", ca.Policy, ca.HitRatio, ca.LoadTimeS, ca.Evictions)
	}
	// An unknown name is reported, not fatal.
	s, _ := New(PolicyCandidates([]string{"lru", "nope@2"}, nil, zerolog.Nop(), clk), topo, sources(bw), clk)
	s.Access(0, []string{"ckpt1"})
	if c := find(t, s.Report(), "nope@2"); !c.Faulted {
		t.Errorf("unknown policy: %+v", c)
	}
	if c := find(t, s.Report(), "lru"); c.Faulted || c.Misses != 1 {
		t.Errorf("lru: %+v", c)
	}
}

func TestFeedAndMetrics(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	s, _ := New([]Candidate{FromEvictor("lru", policy.Native().NewEvictor())}, Topology{Devices: []Device{{VRAMBytes: 4 * gib}}}, sources(Bandwidths{}), clk)
	ch := make(chan job.Event, 8)
	ch <- job.Event{Type: job.EventStarted, JobID: "j1", Worker: "w0"}
	ch <- job.Event{Type: job.EventProgress, JobID: "j1"}
	ch <- job.Event{Type: job.EventStarted, JobID: "j2", Worker: "w0"}
	ch <- job.Event{Type: job.EventStarted, JobID: "gone", Worker: "w0"}
	close(ch)
	s.Feed(context.Background(), ch, func(e job.Event) (int, []string, bool) {
		if e.JobID == "gone" {
			return 0, nil, false
		}
		return 0, []string{"a"}, true
	})
	r := s.Report()
	if r.Accesses != 2 || r.Dropped != 1 || find(t, r, "lru").Hits != 1 {
		t.Fatalf("feed: %+v", r)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"kiln_shadow_hit_ratio", "kiln_shadow_misses_total", "kiln_shadow_load_seconds_total", "kiln_shadow_tier_hit_ratio", "kiln_shadow_faulted"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	// Tiers are named as kiln_tier_* names them; a VRAM tier's GPU is its
	// device label, as in kiln_device_*.
	sawVRAM := false
	for _, mf := range mfs {
		if mf.GetName() != "kiln_shadow_tier_hit_ratio" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			switch l["tier"] {
			case "vram":
				sawVRAM = true
				if l["device"] == "" {
					t.Errorf("a VRAM ghost tier without its device: %v", l)
				}
			case "ram", "disk":
				if l["device"] != "" {
					t.Errorf("a host tier with a device: %v", l)
				}
			default:
				t.Errorf("tier %q is not one of kiln_tier_*'s", l["tier"])
			}
		}
	}
	if !sawVRAM {
		t.Error("no VRAM ghost tier exported")
	}
}

// VRAM residency is per worker, as live: a model another worker on the
// same GPU holds is a miss, and the second copy takes room too. Host tiers
// are shared.
func TestVRAMIsPerWorker(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	topo := Topology{Devices: []Device{{VRAMBytes: 5 * gib}}, RAMBytes: 8 * gib}
	s, _ := New([]Candidate{FromEvictor("lru", policy.Native().NewEvictor())}, topo, sources(Bandwidths{}), clk)
	s.AccessOn(0, "w0", []string{"a"})
	clk.Advance(time.Second)
	s.AccessOn(0, "w1", []string{"a"}) // miss in VRAM, hit in RAM
	clk.Advance(time.Second)
	s.AccessOn(0, "w0", []string{"a"}) // w0 still holds it
	clk.Advance(time.Second)
	s.AccessOn(0, "w1", []string{"b"}) // 3 × 2 GiB > 5 GiB: evicts w1's a, used least recently
	c := find(t, s.Report(), "lru")
	vram, ram := tierOf(t, c, "vram:0"), tierOf(t, c, "ram")
	if vram.Hits != 1 || vram.Misses != 3 || vram.Evictions != 1 || vram.Entries != 2 {
		t.Errorf("vram: %+v", vram)
	}
	if ram.Hits != 1 || ram.Misses != 2 {
		t.Errorf("ram: %+v", ram)
	}
}
