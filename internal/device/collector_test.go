package device

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

func TestCollectorExportsNVMLReadings(t *testing.T) {
	gpus := twoGPUs()
	gpus[0].reasons = reasonHWSlowdown | reasonGPUIdle // idle is left out
	gpus[1].tempErr = ErrNotSupported
	set, err := Open(simConfig("nvml"), zerolog.Nop(), WithDriver(&fakeDriver{gpus: gpus}))
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(set.Collector())
	const labels = `backend="nvml",device="0",name="NVIDIA A",simulated="false",uuid="GPU-a"`
	want := `
# HELP kiln_device_temperature_celsius GPU core temperature.
# TYPE kiln_device_temperature_celsius gauge
kiln_device_temperature_celsius{` + labels + `} 60
# HELP kiln_device_utilization_ratio Share of the last sample period in which a kernel ran (0-1).
# TYPE kiln_device_utilization_ratio gauge
kiln_device_utilization_ratio{` + labels + `} 0.5
kiln_device_utilization_ratio{backend="nvml",device="1",name="NVIDIA B",simulated="false",uuid="GPU-b"} 0
# HELP kiln_device_throttle_reason 1 for each active clock event (throttle) reason; the idle reason is left out.
# TYPE kiln_device_throttle_reason gauge
kiln_device_throttle_reason{backend="nvml",device="0",name="NVIDIA A",reason="hw_slowdown",simulated="false",uuid="GPU-a"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"kiln_device_temperature_celsius", "kiln_device_utilization_ratio", "kiln_device_throttle_reason"); err != nil {
		t.Error(err)
	}
	// Both devices report memory; the unsupported temperature is absent,
	// not zero (checked above: one temperature series).
	if n, err := testutil.GatherAndCount(reg, "kiln_device_memory_used_bytes", "kiln_device_memory_total_bytes"); err != nil || n != 4 {
		t.Errorf("memory series = %d (%v), want 4", n, err)
	}
	// The ledger's reservations carry the same labels as the readings.
	if _, err := set.Ledger(0).Reserve("w0.0", "checkpoints/a", 3<<30); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP kiln_device_ledger_reserved_bytes Memory reserved in the device's VRAM ledger (models, worker contexts, activations).
# TYPE kiln_device_ledger_reserved_bytes gauge
kiln_device_ledger_reserved_bytes{`+labels+`} 3.221225472e+09
kiln_device_ledger_reserved_bytes{backend="nvml",device="1",name="NVIDIA B",simulated="false",uuid="GPU-b"} 0
`), "kiln_device_ledger_reserved_bytes"); err != nil {
		t.Error(err)
	}
}
