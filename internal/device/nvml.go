package device

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
)

// Driver is the narrow slice of NVML that kiln reads. The real one calls
// github.com/NVIDIA/go-nvml (NewNVMLDriver); tests use a fake. Devices are
// addressed by NVML index.
//
// Errors wrap ErrLibraryNotFound or ErrDriverNotLoaded (from Init),
// ErrNotSupported (a field the device does not report) or ErrGPULost where
// NVML says so. Init must succeed before any other call, and every successful
// Init is paired with one Shutdown.
type Driver interface {
	Init() error
	Shutdown() error
	DeviceCount() (int, error)
	Name(i int) (string, error)
	UUID(i int) (string, error)
	// Memory returns total, used and free bytes.
	Memory(i int) (total, used, free uint64, err error)
	// Utilization returns the GPU utilisation in percent.
	Utilization(i int) (uint32, error)
	// Temperature returns the GPU core temperature in degrees Celsius.
	Temperature(i int) (uint32, error)
	// ClockEventReasons returns the bitmask of nvmlDeviceGetCurrentClocksEventReasons.
	ClockEventReasons(i int) (uint64, error)
	// ECCErrors returns the volatile count of uncorrected ECC errors.
	ECCErrors(i int) (uint64, error)
	// PCIeLink returns the maximum PCIe link generation and width that the
	// device and system support (the current link drops to gen 1 when idle).
	PCIeLink(i int) (gen, width int, err error)
}

// Clock event reason bits, as defined in nvml.h.
const (
	reasonGPUIdle              = 0x1
	reasonApplicationsClocks   = 0x2
	reasonSWPowerCap           = 0x4
	reasonHWSlowdown           = 0x8
	reasonSyncBoost            = 0x10
	reasonSWThermalSlowdown    = 0x20
	reasonHWThermalSlowdown    = 0x40
	reasonHWPowerBrakeSlowdown = 0x80
	reasonDisplayClockSetting  = 0x100
	reasonBoardLimit           = 0x200
	reasonReliability          = 0x400
)

// degradingReasons mark a device degraded: it is overheating or being
// slowed down by hardware, so work placed there runs slower than planned.
const degradingReasons = reasonHWSlowdown | reasonSWThermalSlowdown | reasonHWThermalSlowdown | reasonHWPowerBrakeSlowdown

var reasonNames = map[uint64]string{
	reasonGPUIdle:              "gpu_idle",
	reasonApplicationsClocks:   "applications_clocks_setting",
	reasonSWPowerCap:           "sw_power_cap",
	reasonHWSlowdown:           "hw_slowdown",
	reasonSyncBoost:            "sync_boost",
	reasonSWThermalSlowdown:    "sw_thermal_slowdown",
	reasonHWThermalSlowdown:    "hw_thermal_slowdown",
	reasonHWPowerBrakeSlowdown: "hw_power_brake_slowdown",
	reasonDisplayClockSetting:  "display_clock_setting",
	reasonBoardLimit:           "board_limit",
	reasonReliability:          "reliability",
}

// ThrottleReasonNames decodes an NVML clock event reason bitmask into names
// such as "sw_power_cap" and "hw_thermal_slowdown", lowest bit first. The idle
// reason is left out; unknown bits are named "0x..." by value.
func ThrottleReasonNames(mask uint64) []string {
	names := []string{}
	for m := mask &^ reasonGPUIdle; m != 0; m &= m - 1 {
		bit := uint64(1) << bits.TrailingZeros64(m)
		if n, ok := reasonNames[bit]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("0x%x", bit))
		}
	}
	return names
}

// DefaultH2DBytesPerS is the host-to-device bandwidth assumed when the PCIe
// link cannot be read: PCIe 4.0 x16 at a practical 80% of its raw rate.
const DefaultH2DBytesPerS = 25e9

// pcieLaneBytesPerS is the raw rate of one lane after line encoding, by
// generation.
var pcieLaneBytesPerS = [...]float64{1: 0.25e9, 2: 0.5e9, 3: 0.985e9, 4: 1.969e9, 5: 3.938e9, 6: 7.563e9}

// pcieEfficiency is the share of the raw rate that a pinned-memory copy gets
// in practice (protocol overhead).
const pcieEfficiency = 0.8

// EstimateH2D returns the practical host-to-device bandwidth of a PCIe link,
// or DefaultH2DBytesPerS for a link it does not know.
func EstimateH2D(gen, width int) float64 {
	if gen < 1 || gen >= len(pcieLaneBytesPerS) || width < 1 {
		return DefaultH2DBytesPerS
	}
	return pcieLaneBytesPerS[gen] * float64(width) * pcieEfficiency
}

// nvmlDevice is one GPU read through a Driver.
type nvmlDevice struct {
	info Info
	drv  Driver
}

var _ Device = (*nvmlDevice)(nil)

func (d *nvmlDevice) Info() Info { return d.info }

// Sample reads every field it can; ERROR_NOT_SUPPORTED leaves a field nil,
// other errors leave it nil too and are returned joined with the sample.
func (d *nvmlDevice) Sample() (Sample, error) {
	i := d.info.Index
	var s Sample
	var errs []error
	keep := func(field string, err error) bool {
		if err == nil {
			return true
		}
		if !errors.Is(err, ErrNotSupported) {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
		return false
	}
	if _, used, free, err := d.drv.Memory(i); keep("memory", err) {
		s.MemoryUsed, s.MemoryFree = ptr(used), ptr(free)
	}
	if u, err := d.drv.Utilization(i); keep("utilization", err) {
		s.UtilizationGPU = ptr(u)
	}
	if t, err := d.drv.Temperature(i); keep("temperature", err) {
		s.TemperatureC = ptr(t)
	}
	var why []string
	if mask, err := d.drv.ClockEventReasons(i); keep("clock event reasons", err) {
		s.ThrottleReasons = ThrottleReasonNames(mask)
		if bad := mask & degradingReasons; bad != 0 {
			why = append(why, "throttled ("+strings.Join(ThrottleReasonNames(bad), ", ")+")")
		}
	}
	if n, err := d.drv.ECCErrors(i); keep("ecc errors", err) {
		s.ECCErrors = ptr(n)
		if n > 0 {
			why = append(why, fmt.Sprintf("%d uncorrected ecc errors", n))
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		if errors.Is(err, ErrGPULost) {
			why = append(why, "gpu is lost")
		} else {
			why = append(why, "sample failed")
		}
		err = fmt.Errorf("device %d (%s): sample: %w", i, d.info.Name, err)
	}
	if len(why) > 0 {
		s.Degraded, s.DegradedReason = true, strings.Join(why, "; ")
	}
	return s, err
}
