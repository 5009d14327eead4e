//go:build cgo

package device

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlDriver is the Driver over the real NVML library. go-nvml loads
// libnvidia-ml.so with dlopen at Init, so the binary runs on machines
// without it and Init reports ERROR_LIBRARY_NOT_FOUND.
type nvmlDriver struct{}

var _ Driver = nvmlDriver{}

// NewNVMLDriver returns the Driver that calls github.com/NVIDIA/go-nvml.
func NewNVMLDriver() Driver { return nvmlDriver{} }

func nvmlErr(op string, r nvml.Return) error {
	if r == nvml.SUCCESS {
		return nil
	}
	msg := nvml.ErrorString(r)
	switch r {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return fmt.Errorf("nvml %s: %w", op, ErrLibraryNotFound)
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return fmt.Errorf("nvml %s: %w", op, ErrDriverNotLoaded)
	case nvml.ERROR_NOT_SUPPORTED:
		return fmt.Errorf("nvml %s: %w", op, ErrNotSupported)
	case nvml.ERROR_GPU_IS_LOST:
		return fmt.Errorf("nvml %s: %w", op, ErrGPULost)
	}
	return fmt.Errorf("nvml %s: %s", op, msg)
}

func (nvmlDriver) Init() error     { return nvmlErr("init", nvml.Init()) }
func (nvmlDriver) Shutdown() error { return nvmlErr("shutdown", nvml.Shutdown()) }

func (nvmlDriver) DeviceCount() (int, error) {
	n, r := nvml.DeviceGetCount()
	return n, nvmlErr("device count", r)
}

func handle(i int) (nvml.Device, error) {
	h, r := nvml.DeviceGetHandleByIndex(i)
	return h, nvmlErr(fmt.Sprintf("device %d: get handle", i), r)
}

func (nvmlDriver) Name(i int) (string, error) {
	h, err := handle(i)
	if err != nil {
		return "", err
	}
	s, r := h.GetName()
	return s, nvmlErr("name", r)
}

func (nvmlDriver) UUID(i int) (string, error) {
	h, err := handle(i)
	if err != nil {
		return "", err
	}
	s, r := h.GetUUID()
	return s, nvmlErr("uuid", r)
}

func (nvmlDriver) Memory(i int) (total, used, free uint64, err error) {
	h, err := handle(i)
	if err != nil {
		return 0, 0, 0, err
	}
	m, r := h.GetMemoryInfo()
	return m.Total, m.Used, m.Free, nvmlErr("memory info", r)
}

func (nvmlDriver) Utilization(i int) (uint32, error) {
	h, err := handle(i)
	if err != nil {
		return 0, err
	}
	u, r := h.GetUtilizationRates()
	return u.Gpu, nvmlErr("utilization", r)
}

func (nvmlDriver) Temperature(i int) (uint32, error) {
	h, err := handle(i)
	if err != nil {
		return 0, err
	}
	t, r := h.GetTemperature(nvml.TEMPERATURE_GPU)
	return t, nvmlErr("temperature", r)
}

func (nvmlDriver) ClockEventReasons(i int) (uint64, error) {
	h, err := handle(i)
	if err != nil {
		return 0, err
	}
	m, r := h.GetCurrentClocksEventReasons()
	return m, nvmlErr("clock event reasons", r)
}

func (nvmlDriver) ECCErrors(i int) (uint64, error) {
	h, err := handle(i)
	if err != nil {
		return 0, err
	}
	n, r := h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
	return n, nvmlErr("ecc errors", r)
}

func (nvmlDriver) PCIeLink(i int) (gen, width int, err error) {
	h, err := handle(i)
	if err != nil {
		return 0, 0, err
	}
	gen, r := h.GetMaxPcieLinkGeneration()
	if err := nvmlErr("max pcie link generation", r); err != nil {
		return 0, 0, err
	}
	width, r = h.GetMaxPcieLinkWidth()
	return gen, width, nvmlErr("max pcie link width", r)
}
