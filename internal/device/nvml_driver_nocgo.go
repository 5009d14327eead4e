//go:build !cgo

package device

import "fmt"

// stubDriver stands in for NVML in binaries built without cgo, which
// go-nvml needs: it reports that the library is not there, so backend auto
// uses the simulated devices.
type stubDriver struct{}

var _ Driver = stubDriver{}

// NewNVMLDriver returns the Driver that calls github.com/NVIDIA/go-nvml; in
// this build (without cgo) it always fails Init with ErrLibraryNotFound.
func NewNVMLDriver() Driver { return stubDriver{} }

func (stubDriver) Init() error {
	return fmt.Errorf("nvml init: built without cgo: %w", ErrLibraryNotFound)
}
func (stubDriver) Shutdown() error                            { return nil }
func (stubDriver) DeviceCount() (int, error)                  { return 0, ErrLibraryNotFound }
func (stubDriver) Name(int) (string, error)                   { return "", ErrLibraryNotFound }
func (stubDriver) UUID(int) (string, error)                   { return "", ErrLibraryNotFound }
func (stubDriver) Memory(int) (uint64, uint64, uint64, error) { return 0, 0, 0, ErrLibraryNotFound }
func (stubDriver) Utilization(int) (uint32, error)            { return 0, ErrLibraryNotFound }
func (stubDriver) Temperature(int) (uint32, error)            { return 0, ErrLibraryNotFound }
func (stubDriver) ClockEventReasons(int) (uint64, error)      { return 0, ErrLibraryNotFound }
func (stubDriver) ECCErrors(int) (uint64, error)              { return 0, ErrLibraryNotFound }
func (stubDriver) PCIeLink(int) (int, int, error)             { return 0, 0, ErrLibraryNotFound }
