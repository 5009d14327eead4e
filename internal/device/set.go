package device

import (
	"errors"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
)

// Set is the node's devices with one VRAM ledger each. Devices are numbered
// 0..n-1 in the order Devices returns them.
type Set struct {
	backend string
	devices []Device
	ledgers []*Ledger

	closeOnce sync.Once
	closeErr  error
	shutdown  func() error // nil for the simulated backend
}

// Option changes how Open finds devices.
type Option func(*openOptions)

type openOptions struct {
	driver Driver
}

// WithDriver makes Open read NVML through d instead of NewNVMLDriver(); tests
// and tools pass a fake here.
func WithDriver(d Driver) Option { return func(o *openOptions) { o.driver = d } }

// Open finds the devices that cfg selects (cfg should have passed Validate):
//
//   - backend "sim" builds cfg.Simulated;
//   - backend "nvml" opens every NVIDIA GPU and fails if there is none;
//   - backend "auto" tries NVML and, when the library, the driver or any GPU
//     is missing, logs one info line and uses cfg.Simulated.
//
// Close releases the NVML handle.
func Open(cfg Config, log zerolog.Logger, opts ...Option) (*Set, error) {
	var o openOptions
	for _, opt := range opts {
		opt(&o)
	}
	switch cfg.Backend {
	case BackendSim:
		return openSim(cfg)
	case BackendNVML, BackendAuto:
	default:
		return nil, fmt.Errorf("devices: unknown backend %q (want auto, nvml or sim)", cfg.Backend)
	}
	drv := o.driver
	if drv == nil {
		drv = NewNVMLDriver()
	}
	set, err := openNVML(cfg, drv)
	if err == nil {
		log.Info().Int("devices", len(set.devices)).Msg("using nvidia gpus")
		return set, nil
	}
	var absent *noGPUError
	if cfg.Backend == BackendAuto && errors.As(err, &absent) {
		log.Info().Str("reason", err.Error()).
			Msgf("no NVIDIA GPU found (%s), using simulated devices", absent.why)
		return openSim(cfg)
	}
	return nil, fmt.Errorf("devices: %w", err)
}

// noGPUError says that this machine has no usable NVIDIA GPU, as opposed to
// a GPU that misbehaves.
type noGPUError struct {
	why string // "nvml library not found", ...
	err error
}

func (e *noGPUError) Error() string {
	if e.err == nil {
		return e.why
	}
	return e.err.Error()
}

func (e *noGPUError) Unwrap() error { return e.err }

// safeInit calls drv.Init and turns a panic (go-nvml may panic when
// libnvidia-ml.so is broken or half there) into an error.
func safeInit(drv Driver) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &noGPUError{why: "nvml library could not be loaded", err: fmt.Errorf("nvml init panicked: %v", p)}
		}
	}()
	err = drv.Init()
	switch {
	case errors.Is(err, ErrLibraryNotFound):
		return &noGPUError{why: "nvml library not found", err: err}
	case errors.Is(err, ErrDriverNotLoaded):
		return &noGPUError{why: "nvidia driver not loaded", err: err}
	}
	return err
}

func openNVML(cfg Config, drv Driver) (_ *Set, err error) {
	if err := safeInit(drv); err != nil {
		return nil, err
	}
	// Every successful Init is paired with a Shutdown: here on failure,
	// in Set.Close on success.
	defer func() {
		if err != nil {
			if serr := drv.Shutdown(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	n, err := drv.DeviceCount()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, &noGPUError{why: "nvml reports 0 devices"}
	}
	s := &Set{backend: BackendNVML, shutdown: drv.Shutdown}
	for i := range n {
		info, err := nvmlInfo(drv, i)
		if err != nil {
			return nil, err
		}
		s.devices = append(s.devices, &nvmlDevice{info: info, drv: drv})
		s.ledgers = append(s.ledgers, newLedger(info.Name, info.MemoryBytes, cfg.Headroom))
	}
	return s, nil
}

// nvmlInfo reads device i's static description. Only the memory total is
// required; a name or UUID the device does not report is left empty.
func nvmlInfo(drv Driver, i int) (Info, error) {
	info := Info{Index: i, ComputeFactor: 1, Backend: BackendNVML, H2DBytesPerS: DefaultH2DBytesPerS}
	total, _, _, err := drv.Memory(i)
	if err != nil {
		return Info{}, fmt.Errorf("device %d: %w", i, err)
	}
	info.MemoryBytes = total
	if name, err := drv.Name(i); err == nil {
		info.Name = name
	} else if !errors.Is(err, ErrNotSupported) {
		return Info{}, fmt.Errorf("device %d: %w", i, err)
	}
	if uuid, err := drv.UUID(i); err == nil {
		info.UUID = uuid
	} else if !errors.Is(err, ErrNotSupported) {
		return Info{}, fmt.Errorf("device %d: %w", i, err)
	}
	if gen, width, err := drv.PCIeLink(i); err == nil {
		info.H2DBytesPerS = EstimateH2D(gen, width)
	}
	if info.Name == "" {
		info.Name = fmt.Sprintf("gpu-%d", i)
	}
	return info, nil
}

func openSim(cfg Config) (*Set, error) {
	if len(cfg.Simulated) == 0 {
		return nil, errors.New("devices: no simulated devices configured (devices.simulated)")
	}
	s := &Set{backend: BackendSim}
	for i, dc := range cfg.Simulated {
		l := newLedger(dc.Name, dc.MemoryBytes, cfg.Headroom)
		s.devices = append(s.devices, NewSimDevice(i, dc, l))
		s.ledgers = append(s.ledgers, l)
	}
	return s, nil
}

// Backend returns "nvml" or "sim": the backend actually in use.
func (s *Set) Backend() string { return s.backend }

// Devices returns the devices in index order. The slice is a copy.
func (s *Set) Devices() []Device { return append([]Device(nil), s.devices...) }

// Device returns device index, or nil when there is none.
func (s *Set) Device(index int) Device {
	if index < 0 || index >= len(s.devices) {
		return nil
	}
	return s.devices[index]
}

// Ledger returns device index's ledger, or nil when there is no such device.
func (s *Set) Ledger(index int) *Ledger {
	if index < 0 || index >= len(s.ledgers) {
		return nil
	}
	return s.ledgers[index]
}

// Degraded reports whether device index is degraded now (throttled, ECC
// errors, or it could not be sampled); false when there is no such device.
// It samples the device, so callers on a hot path should not call it in a
// tight loop.
func (s *Set) Degraded(index int) bool {
	d := s.Device(index)
	if d == nil {
		return false
	}
	smp, err := d.Sample()
	return smp.Degraded || err != nil
}

// Close shuts NVML down. It is safe to call more than once; later calls
// return the first call's error.
func (s *Set) Close() error {
	s.closeOnce.Do(func() {
		if s.shutdown != nil {
			if err := s.shutdown(); err != nil {
				s.closeErr = fmt.Errorf("devices: close: %w", err)
			}
		}
	})
	return s.closeErr
}

// Describe samples every device and returns its status with the ledger's
// totals. A device that cannot be sampled is reported degraded with the
// readings it did get.
func (s *Set) Describe() []Status {
	out := make([]Status, len(s.devices))
	for i, d := range s.devices {
		info := d.Info()
		l := s.ledgers[i]
		smp, err := d.Sample()
		st := Status{
			Index:           info.Index,
			Name:            info.Name,
			UUID:            info.UUID,
			Backend:         info.Backend,
			Simulated:       info.Simulated,
			MemoryTotal:     info.MemoryBytes,
			MemoryUsed:      smp.MemoryUsed,
			MemoryFree:      smp.MemoryFree,
			Reserved:        l.Used(),
			Usable:          l.Usable(),
			Utilization:     smp.UtilizationGPU,
			TemperatureC:    smp.TemperatureC,
			ThrottleReasons: smp.ThrottleReasons,
			Degraded:        smp.Degraded,
			DegradedReason:  smp.DegradedReason,
		}
		if err != nil && !st.Degraded {
			st.Degraded, st.DegradedReason = true, "sample failed: "+err.Error()
		}
		out[i] = st
	}
	return out
}
