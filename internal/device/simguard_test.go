package device

import (
	"errors"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/worker"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// TestSimulatedWorkerOnGPUs opens devices the way kiln serve does, with
// NVML answered by the fake driver, and builds the worker pool: where NVML
// finds GPUs, the default config (no workers.command: the simulated
// worker) is refused with a message that names the way out, unless the
// config names a real worker or asks for simulation.
func TestSimulatedWorkerOnGPUs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drv     Driver
		workers worker.Config
		refused bool
	}{
		{"gpus, default config", &fakeDriver{gpus: twoGPUs()}, worker.Config{PerDevice: 2}, true},
		{"gpus, the sim named", &fakeDriver{gpus: twoGPUs()}, worker.Config{PerDevice: 2, Command: "/opt/kiln/bin/kiln-worker-sim"}, true},
		{"gpus, simulation asked for", &fakeDriver{gpus: twoGPUs()}, worker.Config{PerDevice: 2, Simulate: true}, false},
		{"gpus, a real worker", &fakeDriver{gpus: twoGPUs()}, worker.Config{PerDevice: 2, Command: "kiln-worker-torch"}, false},
		{"no gpu: simulated devices", &fakeDriver{}, worker.Config{PerDevice: 2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Open(simConfig("auto"), zerolog.Nop(), WithDriver(tc.drv))
			if err != nil {
				t.Fatal(err)
			}
			defer set.Close()
			var devs []wire.DeviceInfo
			for _, d := range set.Devices() {
				in := d.Info()
				devs = append(devs, wire.DeviceInfo{Index: in.Index, Name: in.Name, UUID: in.UUID, MemoryBytes: in.MemoryBytes, Simulated: in.Simulated})
			}
			_, err = worker.NewPool(tc.workers, worker.PoolOptions{Devices: devs})
			if got := errors.Is(err, worker.ErrSimulatedWorkerOnGPU); got != tc.refused {
				t.Fatalf("NewPool on %s devices: %v; want refused=%v", set.Backend(), err, tc.refused)
			}
			if tc.refused {
				t.Logf("message: %v", err)
			}
		})
	}
}
