package device

import (
	"errors"
	"fmt"
)

// Backend names, as used in Config.Backend and Info.Backend.
const (
	// BackendAuto uses NVML when an NVIDIA GPU is present, else simulated devices.
	BackendAuto = "auto"
	// BackendNVML reads real NVIDIA GPUs and fails when there are none.
	BackendNVML = "nvml"
	// BackendSim uses the simulated devices of Config.Simulated.
	BackendSim = "sim"
)

// Config selects the device backend and describes simulated devices.
type Config struct {
	// Backend is auto (NVML when present, else simulated), nvml or sim.
	Backend string `koanf:"backend"`
	// Headroom is the fraction of each device's memory that the ledger never
	// hands out (allocator fragmentation, CUDA context, the OS).
	Headroom float64 `koanf:"headroom"`
	// Simulated lists the devices of the simulated backend.
	Simulated []SimDeviceConfig `koanf:"simulated"`
}

// SimDeviceConfig describes one simulated GPU.
type SimDeviceConfig struct {
	// Name identifies the device in logs and the API; unique within a node.
	Name string `koanf:"name"`
	// MemoryBytes is the device's total memory.
	MemoryBytes uint64 `koanf:"memory_bytes"`
	// H2DBytesPerS is the host-to-device copy bandwidth used to charge loads.
	H2DBytesPerS float64 `koanf:"h2d_bytes_per_s"`
	// ComputeFactor scales compute time: 1 is the reference GPU, 2 is twice
	// as fast.
	ComputeFactor float64 `koanf:"compute_factor"`
}

// Validate checks the config. Each error names its full config key (e.g.
// "devices.simulated[1].name: ..."), as every section's Validate does.
func (c Config) Validate() error {
	var errs []error
	switch c.Backend {
	case BackendAuto, BackendNVML, BackendSim:
	default:
		errs = append(errs, fmt.Errorf("devices.backend: %q is not one of auto, nvml, sim", c.Backend))
	}
	if !(c.Headroom >= 0 && c.Headroom < 1) { // also catches NaN
		errs = append(errs, fmt.Errorf("devices.headroom: %v is outside [0, 1)", c.Headroom))
	}
	if c.Backend != BackendNVML && len(c.Simulated) == 0 {
		errs = append(errs, fmt.Errorf("devices.simulated: backend %s needs at least one simulated device", c.Backend))
	}
	seen := make(map[string]int, len(c.Simulated))
	for i, d := range c.Simulated {
		key := fmt.Sprintf("devices.simulated[%d]", i)
		if d.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: must not be empty", key))
		} else if j, dup := seen[d.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already used by devices.simulated[%d]", key, d.Name, j))
		} else {
			seen[d.Name] = i
		}
		if d.MemoryBytes == 0 {
			errs = append(errs, fmt.Errorf("%s.memory_bytes: must be > 0", key))
		}
		if !(d.H2DBytesPerS > 0) {
			errs = append(errs, fmt.Errorf("%s.h2d_bytes_per_s: must be > 0, got %v", key, d.H2DBytesPerS))
		}
		if !(d.ComputeFactor > 0) {
			errs = append(errs, fmt.Errorf("%s.compute_factor: must be > 0, got %v", key, d.ComputeFactor))
		}
	}
	return errors.Join(errs...)
}
