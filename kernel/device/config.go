package device

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
	Name          string  `koanf:"name"`
	MemoryBytes   uint64  `koanf:"memory_bytes"`
	H2DBytesPerS  float64 `koanf:"h2d_bytes_per_s"`
	ComputeFactor float64 `koanf:"compute_factor"`
}
