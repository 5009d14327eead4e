package dispatch

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/predict"
	"github.com/kiln-gpu/kiln/internal/tier"
)

// seenEntries is an evictor that keeps the entries it was last shown and
// answers as the native policy does.
type seenEntries struct {
	decision.Evictor
	last []decision.EntryView
}

func (s *seenEntries) Victims(need uint64, entries []decision.EntryView) []int {
	s.last = append(s.last[:0], entries...)
	return s.Evictor.Victims(need, entries)
}

// TestHostTierEntriesCarryRecentDemand: the RAM tier's eviction policy sees
// each entry's recent demand (ABI 1.3) from the demand the node shares
// with its dispatcher, at the tier's clock: the model three jobs asked for
// reads 3, the one no job asked for 0.
func TestHostTierEntriesCarryRecentDemand(t *testing.T) {
	const size = 1 << 20
	st := memStorage{"a": bytes.Repeat([]byte{1}, size), "b": bytes.Repeat([]byte{2}, size), "c": bytes.Repeat([]byte{3}, size)}
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	demand := predict.NewDemand()
	for range 3 {
		demand.Observe(clk.Now(), []string{"a"})
	}
	ram := &seenEntries{Evictor: policy.Native().NewEvictor()}
	m, err := tier.New(tier.Config{RAM: tier.RAMConfig{Dir: filepath.Join(dir, "shm"), CapacityBytes: size * 5 / 2}},
		memResolver{st}, tier.Options{DataDir: dir, Clock: clk, DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: ram, Demand: demand.Of})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	for _, id := range []string{"a", "b", "c"} {
		l, err := m.Acquire(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	got := map[string]float64{}
	for _, e := range ram.last {
		got[e.Model] = e.RecentDemand
	}
	if len(got) != 2 || got["a"] != 3 || got["b"] != 0 {
		t.Errorf("the RAM tier's evictor saw demand %v, want a: 3, b: 0", got)
	}
}
