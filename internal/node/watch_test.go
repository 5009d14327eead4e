package node

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestWatchHook: an activation and a set by hand open a watch; the
// experiment controller's promotion (through promotingHost) does not,
// except of a kind whose arms share what it harms (balancing); a
// rollback by hand ends the open watch as superseded.
func TestWatchHook(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	h, err := policy.NewHost(policy.Config{Scheduling: "priority", Balancing: "affinity", Eviction: "lru", Batching: "none",
		NativeBuiltins: true, CallTimeout: time.Second, CacheDir: t.TempDir()}, zerolog.Nop(), clk)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	w, err := experiment.NewWatcher(experiment.WatchOptions{Config: experiment.WatchConfig{Enabled: true, Window: time.Minute}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	nw := &nodeWatch{w: w, runningAt: map[string]time.Time{}}
	h.OnChange(nw.onChange)
	ctx := context.Background()
	promoter := promotingHost{Host: h, nw: nw}

	if _, err := promoter.Activate(ctx, abi.KindScheduling, "edf", 0, "experiment x promoted the candidate"); err != nil {
		t.Fatal(err)
	}
	if ws := w.Watches(); len(ws) != 0 {
		t.Fatalf("a scheduling promotion opened watches %+v; want none", ws)
	}
	// A balancing promotion is watched: its arms shared the devices and
	// caches its harm travels through (sharedHarm).
	if err := promoter.SetParam(abi.KindBalancing, "spill", 2); err != nil {
		t.Fatal(err)
	}
	if ws := w.Watches(); len(ws) != 1 || ws[0].Change.Kind != "balancing" {
		t.Fatalf("a balancing promotion opened watches %+v; want one", ws)
	}
	if _, err := h.Activate(ctx, abi.KindScheduling, "fifo", 0, "by hand"); err != nil {
		t.Fatal(err)
	}
	ws := w.Watches()
	if len(ws) != 2 || ws[0].State != experiment.WatchOpen || ws[0].Change.From != "edf@1" || ws[0].Change.To != "fifo@1" {
		t.Fatalf("after an activation by hand: %+v; want one open watch edf → fifo", ws)
	}
	if err := h.SetParam(abi.KindBalancing, "spill", 3); err != nil {
		t.Fatal(err)
	}
	ws = w.Watches()
	if len(ws) != 3 || ws[0].Change.Action != "set" || ws[0].Change.Before["spill"] != 2 || ws[1].State != experiment.WatchSuperseded {
		t.Fatalf("after a set by hand: %+v; want the set open, the activation superseded", ws)
	}
	if _, err := h.Rollback(abi.KindScheduling, "by hand"); err != nil {
		t.Fatal(err)
	}
	if ws = w.Watches(); ws[0].State != experiment.WatchSuperseded {
		t.Errorf("after a rollback by hand the set's watch is %s; want superseded", ws[0].State)
	}
}
