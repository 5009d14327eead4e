package sim

import (
	"errors"
	"fmt"
	"math"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/kernel/clock"
	"github.com/kiln-gpu/kiln/kernel/config"
	"github.com/kiln-gpu/kiln/kernel/cost"
	"github.com/kiln-gpu/kiln/kernel/device"
	"github.com/kiln-gpu/kiln/kernel/policy"
)

// DefaultRemoteBytesPerS is the bandwidth from the model source (L4) when
// the config does not say: a 10 Gbit/s network share or object store.
const DefaultRemoteBytesPerS = 1.25e9

// DefaultQueueView is how many queued jobs the scheduler is shown per
// decision, as the live dispatcher does (queuedViews(256)).
const DefaultQueueView = 256

// Config is the simulated node: its hardware, cost model and policies. It
// is a value; Run does not change it. FromKernelConfig builds one from
// kiln's config so that `kiln sim` honours the same keys as `kiln serve`.
type Config struct {
	// Devices are the simulated GPUs (devices.simulated).
	Devices []device.SimDeviceConfig
	// Headroom is the fraction of each device never reserved (devices.headroom).
	Headroom float64
	// WorkersPerDevice is workers.per_device.
	WorkersPerDevice int
	// Cost is the cost model (cost.*), the same one kiln-worker-sim charges.
	Cost cost.Config
	// Policies selects the built-in policy of each kind (policies.*).
	Policies policy.Config
	// RAMBytes and DiskBytes bound the L2 and L3 tiers
	// (tiers.ram.capacity_bytes, tiers.disk.capacity_bytes).
	RAMBytes  int64
	DiskBytes int64
	// RemoteBytesPerS is the read bandwidth of the model source (L4) into
	// L3; 0 means DefaultRemoteBytesPerS. Disk (L3 → RAM) reads at
	// Cost.DiskBytesPerS and RAM → device at the device's host→device
	// bandwidth, both through the cost model.
	RemoteBytesPerS float64
	// QueueView bounds the queued jobs shown to the scheduler; 0 means
	// DefaultQueueView.
	QueueView int
}

// FromKernelConfig takes the simulated node from kiln's config.
func FromKernelConfig(c *config.Config) Config {
	return Config{
		Devices:          append([]device.SimDeviceConfig(nil), c.Devices.Simulated...),
		Headroom:         c.Devices.Headroom,
		WorkersPerDevice: c.Workers.PerDevice,
		Cost:             c.Cost,
		Policies:         c.Policies,
		RAMBytes:         c.Tiers.RAM.CapacityBytes,
		DiskBytes:        c.Tiers.Disk.CapacityBytes,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	c.Cost = c.Cost.WithDefaults()
	c.Policies = c.Policies.WithDefaults()
	if c.WorkersPerDevice == 0 {
		c.WorkersPerDevice = 1
	}
	if c.RemoteBytesPerS == 0 {
		c.RemoteBytesPerS = DefaultRemoteBytesPerS
	}
	if c.QueueView == 0 {
		c.QueueView = DefaultQueueView
	}
	if c.RAMBytes == 0 {
		c.RAMBytes = 8 << 30
	}
	if c.DiskBytes == 0 {
		c.DiskBytes = 50 << 30
	}
	return c
}

// Validate checks the config after defaults.
func (c Config) Validate() error {
	var errs []error
	if len(c.Devices) == 0 {
		errs = append(errs, errors.New("sim: no simulated devices (devices.simulated)"))
	}
	for i, d := range c.Devices {
		if d.MemoryBytes == 0 {
			errs = append(errs, fmt.Errorf("sim: devices.simulated[%d].memory_bytes: must be > 0", i))
		}
	}
	if c.WorkersPerDevice < 1 {
		errs = append(errs, fmt.Errorf("sim: workers.per_device: %d is < 1", c.WorkersPerDevice))
	}
	if c.RAMBytes < 0 || c.DiskBytes < 0 {
		errs = append(errs, errors.New("sim: tier capacities must be >= 0"))
	}
	if !(c.RemoteBytesPerS > 0) || math.IsInf(c.RemoteBytesPerS, 0) {
		errs = append(errs, errors.New("sim: remote bandwidth must be > 0"))
	}
	if err := c.Cost.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Options are the run's collaborators, injected so that the package never
// reads the wall clock itself.
type Options struct {
	// Wall measures the run's wall time, only to compute sim_speedup; nil
	// means clock.Real(). Tests pass a clock.Fake for byte-identical reports.
	Wall clock.Clock
	// Log receives the policy host's logs; the zero logger discards them.
	Log zerolog.Logger
	// Seed is recorded in the report. The run itself draws no random
	// numbers (every tie is broken by order); the generators use the seed.
	Seed int64
}
