package device

import "errors"

// Errors that callers test for with errors.Is.
var (
	// ErrInsufficientVRAM is wrapped by Ledger errors for a reservation or a
	// growth that does not fit in the device's usable memory.
	ErrInsufficientVRAM = errors.New("insufficient vram")
	// ErrReleased is returned when resizing a reservation that was released.
	ErrReleased = errors.New("reservation released")
	// ErrLibraryNotFound means the NVML library could not be loaded: there is
	// no NVIDIA driver on this machine.
	ErrLibraryNotFound = errors.New("nvml library not found")
	// ErrDriverNotLoaded means the NVML library is present but the NVIDIA
	// kernel driver is not running.
	ErrDriverNotLoaded = errors.New("nvidia driver not loaded")
	// ErrNotSupported means the device does not report a field; samples leave
	// such fields unknown instead of failing.
	ErrNotSupported = errors.New("not supported")
	// ErrGPULost means the GPU fell off the bus or stopped answering.
	ErrGPULost = errors.New("gpu is lost")
)

// Device is one GPU, real or simulated. Implementations are safe for
// concurrent use.
type Device interface {
	// Info returns the device's static description; it has no side effects.
	Info() Info
	// Sample reads the device's current state. Fields the device does not
	// report are nil. A non-nil error comes with a partial sample whose
	// failed fields are nil.
	Sample() (Sample, error)
}

// Info is what does not change while kiln runs.
type Info struct {
	// Index is the device's position in its Set (for NVML, the NVML index,
	// which follows PCI bus order and may differ from CUDA's default order).
	Index int
	// Name is the product name ("NVIDIA GeForce RTX 4090") or the simulated
	// device's configured name.
	Name string
	// UUID is NVML's "GPU-..." UUID, or "sim-<name>" for a simulated device.
	UUID string
	// MemoryBytes is the device's total memory.
	MemoryBytes uint64
	// H2DBytesPerS is the host-to-device bandwidth used to cost loads. For
	// NVML it is estimated from the maximum PCIe link generation and width.
	H2DBytesPerS float64
	// ComputeFactor scales compute time relative to the reference GPU (1).
	ComputeFactor float64
	// Simulated is true for every device of the simulated backend.
	Simulated bool
	// Backend is "nvml" or "sim".
	Backend string
}

// Sample is a device's state at one moment. Pointer fields are nil when the
// device does not report them (NVML's ERROR_NOT_SUPPORTED is tolerated field
// by field).
type Sample struct {
	// MemoryUsed and MemoryFree are bytes as the driver sees them (every
	// process), or for a simulated device what its ledger has reserved.
	MemoryUsed *uint64
	MemoryFree *uint64
	// UtilizationGPU is the percentage of time a kernel ran in the last
	// sample period (0-100).
	UtilizationGPU *uint32
	// TemperatureC is the GPU core temperature in degrees Celsius.
	TemperatureC *uint32
	// ThrottleReasons names the active clock event reasons (see
	// ThrottleReasonNames); nil when unknown, empty when none. The idle
	// reason is left out: an idle GPU is not throttled.
	ThrottleReasons []string
	// ECCErrors counts uncorrected (volatile) ECC errors since the driver
	// loaded.
	ECCErrors *uint64
	// Degraded is true when the device is thermally or power-brake
	// throttled, has uncorrected ECC errors or could not be sampled; the
	// balancer avoids degraded devices. DegradedReason says why.
	Degraded       bool
	DegradedReason string
}

// Status is a device's description, state and ledger totals, in the JSON
// shape of GET /v1/devices and `kiln devices`. Unknown readings are null.
type Status struct {
	Index           int      `json:"index"`
	Name            string   `json:"name"`
	UUID            string   `json:"uuid"`
	Backend         string   `json:"backend"`
	Simulated       bool     `json:"simulated"`
	MemoryTotal     uint64   `json:"memory_total"`
	MemoryUsed      *uint64  `json:"memory_used"`
	MemoryFree      *uint64  `json:"memory_free"`
	Reserved        uint64   `json:"reserved"`
	Usable          uint64   `json:"usable"`
	Utilization     *uint32  `json:"utilization"`
	TemperatureC    *uint32  `json:"temperature_c"`
	ThrottleReasons []string `json:"throttle_reasons"`
	Degraded        bool     `json:"degraded"`
	DegradedReason  string   `json:"degraded_reason"`
}

func ptr[T any](v T) *T { return &v }
