package dispatch

import (
	"os"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/worker"
	"github.com/kiln-gpu/kiln/internal/workflow"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
	"github.com/rs/zerolog"
)

// TestFitWaitsForTheWorkers checks that the API's fit check cannot refuse
// a job before any worker has said hello (whether they stream weights is
// unknown then: room 0), and judges again once one has.
func TestFitWaitsForTheWorkers(t *testing.T) {
	r := newRig(t, 24*gib, 1, map[string]int64{"checkpoints/a.safetensors": gib})
	deadline := time.Now().Add(30 * time.Second)
	for r.pool.Ready() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no worker ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f := &workflow.Facts{}
	if _, room := r.d.FitFacts(f); room == 0 {
		t.Fatal("room 0 with a worker ready, want the device's room")
	}

	// The same node before its workers said hello: a pool made, not started.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := worker.NewPool(worker.Config{PerDevice: 1, Command: exe}.WithDefaults(), worker.PoolOptions{
		Devices: []wire.DeviceInfo{{Index: 0, Name: "sim-0", MemoryBytes: 24 * gib, Simulated: true}}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Stop()
	early := New(Options{Store: r.store, Devices: r.set, Catalog: r.d.opts.Catalog, Log: zerolog.Nop()})
	early.SetPool(pool)
	if need, room := early.FitFacts(f); room != 0 {
		t.Errorf("before any worker said hello: need %d, room %d; want room 0 (cannot judge yet)", need, room)
	}
	// Without a pool nothing is waited for: the devices' room stands.
	alone := New(Options{Store: r.store, Devices: r.set, Catalog: r.d.opts.Catalog, Log: zerolog.Nop()})
	if _, room := alone.FitFacts(f); room == 0 {
		t.Error("no pool: room 0, want the device's room")
	}
}
