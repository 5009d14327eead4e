package device

import (
	"math"
	"sync/atomic"
)

// SimTemperatureC is the fixed temperature a simulated device reports.
const SimTemperatureC = 40

// SimDevice is a simulated GPU. Its memory use is what its ledger has
// reserved, so that the simulated memory tracks what kiln loaded, and its
// utilisation is whatever SetBusy last said.
type SimDevice struct {
	info   Info
	ledger *Ledger
	busy   atomic.Uint64 // math.Float64bits of the busy fraction
}

var _ Device = (*SimDevice)(nil)

// NewSimDevice returns simulated device number index described by cfg whose
// memory use is read from ledger.
func NewSimDevice(index int, cfg SimDeviceConfig, ledger *Ledger) *SimDevice {
	return &SimDevice{
		info: Info{
			Index:         index,
			Name:          cfg.Name,
			UUID:          "sim-" + cfg.Name,
			MemoryBytes:   cfg.MemoryBytes,
			H2DBytesPerS:  cfg.H2DBytesPerS,
			ComputeFactor: cfg.ComputeFactor,
			Simulated:     true,
			Backend:       BackendSim,
		},
		ledger: ledger,
	}
}

// Info implements Device.
func (d *SimDevice) Info() Info { return d.info }

// SetBusy sets the fraction of time the device computes (clamped to [0, 1]);
// Sample reports it as a percentage. Simulated workers call it as jobs start
// and finish.
func (d *SimDevice) SetBusy(fraction float64) {
	switch {
	case !(fraction >= 0): // NaN too
		fraction = 0
	case fraction > 1:
		fraction = 1
	}
	d.busy.Store(math.Float64bits(fraction))
}

// Sample implements Device. It never fails.
func (d *SimDevice) Sample() (Sample, error) {
	used := d.ledger.Used()
	free := uint64(0)
	if used < d.info.MemoryBytes {
		free = d.info.MemoryBytes - used
	}
	busy := math.Float64frombits(d.busy.Load())
	return Sample{
		MemoryUsed:      ptr(used),
		MemoryFree:      ptr(free),
		UtilizationGPU:  ptr(uint32(math.Round(busy * 100))),
		TemperatureC:    ptr(uint32(SimTemperatureC)),
		ThrottleReasons: []string{},
		ECCErrors:       ptr(uint64(0)),
	}, nil
}
