package dispatch

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/tier"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// memStorage is remote storage holding objects in memory.
type memStorage map[string][]byte

func (s memStorage) List(context.Context, string) ([]sdk.Object, error) { return nil, nil }
func (s memStorage) Stat(_ context.Context, key string) (sdk.Object, error) {
	return sdk.Object{Key: key, Size: int64(len(s[key]))}, nil
}
func (s memStorage) Open(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	b := s[key][offset:]
	if length > 0 {
		b = b[:length]
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

type memResolver struct{ st memStorage }

func (r memResolver) Resolve(_ context.Context, id string) (catalog.Source, error) {
	return catalog.Source{Storage: r.st, Backend: "mem", Key: id, Size: int64(len(r.st[id]))}, nil
}

// TestLoadCostFollowsTheTiers prices a model's load from the fastest tier
// holding it: remote storage, then local disk once fetched, then host RAM
// (only the host→device copy left). The fake clock never advances, so no
// transfer is measured and the cost model's rates apply throughout.
func TestLoadCostFollowsTheTiers(t *testing.T) {
	const size = 1 << 20
	st := memStorage{"a": bytes.Repeat([]byte{1}, size), "b": bytes.Repeat([]byte{2}, size)}
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m, err := tier.New(tier.Config{RAM: tier.RAMConfig{Dir: filepath.Join(dir, "shm"), CapacityBytes: size * 3 / 2}},
		memResolver{st}, tier.Options{DataDir: dir, Clock: clk, DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: policy.Native().NewEvictor()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	d := New(Options{Tiers: m, Clock: clk})
	c := d.opts.Cost
	a := catalog.Entry{ID: "a", NominalBytes: 4 << 30}
	copyIn, read := c.TransferTime(a.NominalBytes, cost.Device{}), c.DiskReadTime(a.NominalBytes)

	if got, want := d.loadCoster().of(a), copyIn+2*read; got != want {
		t.Errorf("remote only: %v, want %v (fetch, read, copy)", got, want)
	}
	acquire := func(id string) {
		l, err := m.Acquire(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	acquire("a")
	if got := d.loadCoster().of(a); got != copyIn {
		t.Errorf("in RAM: %v, want %v (the copy alone)", got, copyIn)
	}
	acquire("b") // RAM holds one model: a goes back to disk only
	if ram, disk := m.Holds("a"); ram || !disk {
		t.Fatalf("a in RAM %v, on disk %v; want only on disk", ram, disk)
	}
	if got, want := d.loadCoster().of(a), copyIn+read; got != want {
		t.Errorf("on disk: %v, want %v (read, copy)", got, want)
	}

	// Without tiers every load is priced from disk, as the cost model does.
	if got, want := New(Options{Clock: clk}).loadCoster().of(a), c.LoadTime("", a.NominalBytes, cost.Device{}); got != want {
		t.Errorf("without tiers: %v, want %v", got, want)
	}
}
