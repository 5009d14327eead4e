package shadow

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
)

// BenchmarkAccess is the shadow's cost per job start: every built-in
// eviction policy (native, private hosts) over two devices, RAM and disk,
// on a Zipf stream over 200 models with a full cache (evictions every few
// accesses).
func BenchmarkAccess(b *testing.B) {
	clk := clock.NewFake(time.Unix(0, 0))
	topo := Topology{Devices: []Device{{VRAMBytes: 20 * gib}, {VRAMBytes: 20 * gib}}, RAMBytes: 64 * gib, DiskBytes: 200 * gib}
	bw := Bandwidths{H2D: []float64{10 * gib, 10 * gib}, RAM: 2 * gib, Disk: 0.2 * gib}
	s, err := New(PolicyCandidates(nil, nil, zerolog.Nop(), clk), topo, sources(bw), clk)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	z := rand.NewZipf(rng, 1.05, 1, 199)
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = fmt.Sprint("m", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		clk.Advance(time.Second)
		s.Access(rng.IntN(2), []string{ids[z.Uint64()], ids[z.Uint64()]})
	}
}
