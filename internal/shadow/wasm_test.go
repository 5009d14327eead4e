package shadow

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// A WASM eviction policy loaded into the live host is shadowed through a
// version-pinned arm, and gives the same figures as the native build of
// the same source in its private host. One ghost tier only: the ghosts of
// a WASM candidate share its version's state words (see PolicyCandidates),
// so with several tiers GDSF's inflation would mix between them.
func TestLoadedWASMCandidateMatchesNative(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector slows WASM calls past the call deadline (faults, rightly reported)")
	}
	wasm, err := fs.ReadFile(policy.BuiltinFS(), policy.BuiltinFile(abi.KindEviction, "gdsf"))
	if err != nil {
		t.Skip("no WASM build of gdsf in this checkout (make policies builds it)")
	}
	clk := clock.NewFake(time.Unix(0, 0))
	live, err := policy.NewHost(policy.Config{NativeBuiltins: true, CallTimeout: 5 * time.Second}, zerolog.Nop(), clk)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := live.Load(context.Background(), abi.KindEviction, "gdsf-wasm", wasm, false, "test"); err != nil {
		t.Fatal(err)
	}
	topo := Topology{Devices: []Device{{VRAMBytes: 8 * gib}}}
	bw := Bandwidths{H2D: []float64{10 * gib}, RAM: 2 * gib, Disk: 0.2 * gib}
	s, err := New(PolicyCandidates([]string{"gdsf", "gdsf-wasm"}, live, zerolog.Nop(), clk), topo, sources(bw), clk)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	z := rand.NewZipf(rng, 1.1, 1, 29)
	for i := 0; i < 400; i++ {
		clk.Advance(time.Duration(1+rng.IntN(3000)) * time.Millisecond)
		models := []string{fmt.Sprint("m", z.Uint64())}
		if rng.IntN(5) == 0 {
			models = append(models, fmt.Sprint("big", rng.IntN(2)))
		}
		s.Access(0, models)
	}
	r := s.Report()
	native, guest := find(t, r, "gdsf"), find(t, r, "gdsf-wasm")
	if guest.Faulted || native.Faulted {
		t.Fatalf("faulted: %+v / %+v", native, guest)
	}
	if native.Hits != guest.Hits || native.Evictions != guest.Evictions || native.LoadTimeS != guest.LoadTimeS {
		t.Errorf("native %+v\nwasm %+v", native, guest)
	}
	if native.Evictions == 0 {
		t.Error("the stream never filled the ghosts")
	}
}
