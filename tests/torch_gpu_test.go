//go:build torch

package tests

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/kernel/device"
)

// LedgerTolerance is how far kiln's ledger may sit from NVML's used memory
// after the torch worker loads and unloads models: the CUDA context of the
// worker (300-600 MiB depending on the GPU and driver), the caching
// allocator's rounding, and any other process on the GPU, which NVML
// counts and the ledger does not. 1 GiB covers the context with margin;
// the test subtracts the baseline NVML reading taken before kiln started.
const LedgerTolerance = 1 << 30

// nvmlUsed returns NVML's used memory of device 0, skipping the test when
// NVML is not available.
func nvmlUsed(t *testing.T) (used uint64, name string) {
	t.Helper()
	set, err := device.Open(device.Config{Backend: device.BackendNVML, Headroom: 0.1}, zerolog.Nop())
	if err != nil {
		t.Skipf("no NVML device (this test needs an NVIDIA GPU and driver): %v", err)
	}
	defer set.Close()
	d := set.Device(0)
	s, err := d.Sample()
	if err != nil || s.MemoryUsed == nil {
		t.Fatalf("NVML sample: %v", err)
	}
	for _, field := range []struct {
		name string
		ok   bool
	}{{"utilization", s.UtilizationGPU != nil}, {"temperature", s.TemperatureC != nil}, {"throttle reasons", s.ThrottleReasons != nil}} {
		if !field.ok {
			t.Errorf("NVML did not report %s", field.name)
		}
	}
	return *s.MemoryUsed, d.Info().Name
}

func TestTorchGPULedgerMatchesNVML(t *testing.T) {
	requireTorch(t)
	base, name := nvmlUsed(t)
	t.Logf("GPU %s: %d bytes used before kiln", name, base)
	k := startKiln(t, t.TempDir(), torchSets(t, "cuda")...)
	id := k.submit(smallWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 512, 4, 1), "interactive")
	waitFor(t, 5*time.Minute, "the GPU job to finish", func() bool {
		s := k.job(id).State
		if s == "failed" {
			t.Fatalf("job failed:\n%s", k.logTail())
		}
		return s == "done"
	})
	ledger := vramReserved(t, k)
	used, _ := nvmlUsed(t)
	diff := int64(used-base) - int64(ledger)
	t.Logf("ledger %d bytes, NVML used %d (+%d over baseline), difference %d", ledger, used, used-base, diff)
	if diff < -LedgerTolerance || diff > LedgerTolerance {
		t.Errorf("ledger %d and NVML %d differ by %d bytes, more than %d", ledger, used-base, diff, LedgerTolerance)
	}
	code, data := k.do("GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("metrics: HTTP %d", code)
	}
	t.Logf("metrics:\n%.3000s", data)
}

// vramReserved sums kiln_vram_reserved_bytes over devices from /metrics.
func vramReserved(t *testing.T, k *kilnProc) uint64 {
	t.Helper()
	_, data := k.do("GET", "/metrics", nil)
	var total float64
	for _, line := range splitLines(string(data)) {
		var dev string
		var v float64
		if n, _ := sscanMetric(line, "kiln_vram_reserved_bytes", &dev, &v); n {
			total += v
		}
	}
	return uint64(total)
}

func splitLines(s string) []string { return strings.Split(s, "\n") }

// sscanMetric parses `name{device="x"} value`.
func sscanMetric(line, name string, dev *string, v *float64) (bool, error) {
	if !strings.HasPrefix(line, name+"{") {
		return false, nil
	}
	i := strings.LastIndexByte(line, ' ')
	if i < 0 {
		return false, nil
	}
	f, err := strconv.ParseFloat(line[i+1:], 64)
	if err != nil {
		return false, err
	}
	*dev, *v = line[len(name)+1:i-1], f
	return true, nil
}
