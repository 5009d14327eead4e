package shadow

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestPairComparesArms checks the experiments' cache replay: two arms of
// the same version charge exactly the same load time on the same accesses
// (each ghost tier has an evictor of its own, so neither's state leaks into
// the other's), arms of different policies are replayed apart, and an arm
// that is not an eviction policy is a faulted hierarchy, not a crash.
func TestPairComparesArms(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	h, err := policy.NewHost(policy.Config{NativeBuiltins: true}, zerolog.Nop(), clk)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	arm := func(k abi.Kind, name string) *policy.Arm {
		a, err := h.Arm(context.Background(), k, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	topo := Topology{Devices: []Device{{Name: "g0", VRAMBytes: 7 * gib}, {Name: "g1", VRAMBytes: 7 * gib}}, RAMBytes: 6 * gib, DiskBytes: 40 * gib}
	bw := Bandwidths{H2D: []float64{10 * gib, 10 * gib}, RAM: 2 * gib, Disk: 1 * gib}
	replay := func(p *Pair) {
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range 400 {
			// A skewed stream over 24 models and one big one: every
			// tier must evict.
			m := fmt.Sprintf("m%02d", int(24*rng.Float64()*rng.Float64()))
			if i%17 == 0 {
				m = "big0"
			}
			p.AccessOn(i%2, fmt.Sprintf("w%d", i%4), []string{m})
			clk.Advance(3e9)
		}
	}

	same, err := NewPair(arm(abi.KindEviction, "lru"), arm(abi.KindEviction, "lru"), topo, sources(bw), clk)
	if err != nil {
		t.Fatal(err)
	}
	replay(same)
	b, c := same.LoadTimes()
	if b <= 0 || b != c {
		t.Errorf("same policy: load times %v and %v, want equal and positive", b, c)
	}

	diff, err := NewPair(arm(abi.KindEviction, "lru"), arm(abi.KindEviction, "gdsf"), topo, sources(bw), clk)
	if err != nil {
		t.Fatal(err)
	}
	replay(diff)
	rep := diff.Report()
	if len(rep.Candidates) != 2 || rep.Accesses != 400 {
		t.Fatalf("pair report: %d hierarchies, %d accesses; want 2 and 400", len(rep.Candidates), rep.Accesses)
	}
	lb, _ := diff.LoadTimes()
	if lb != b {
		t.Errorf("the lru hierarchy charged %v beside gdsf and %v beside lru: the hierarchies are not independent", lb, b)
	}

	bad, err := NewPair(arm(abi.KindEviction, "lru"), arm(abi.KindScheduling, "fifo"), topo, sources(bw), clk)
	if err != nil {
		t.Fatal(err)
	}
	replay(bad)
	if c := find(t, bad.Report(), pairCandidate); !c.Faulted {
		t.Errorf("a scheduling arm as the candidate: %+v, want a faulted hierarchy", c)
	}
}
