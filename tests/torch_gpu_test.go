//go:build torch

package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/device"
)

// The ledger counts model tensors; NVML counts everything on the GPU. The
// difference is the worker's CUDA context (300-900 MiB depending on the GPU,
// driver and torch build), which the test measures as what stays used after
// every model is unloaded, plus what the caching allocator keeps from the
// sampling steps' activations. After subtracting the context, ledger and
// NVML must agree within AllocatorSlack; the context itself must stay under
// MaxContext (a worker that leaks tensors shows up there).
const (
	AllocatorSlack = 512 << 20
	MaxContext     = 1536 << 20
)

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

// gpuModelScale sizes the synthesized models for the GPU test: half size
// (SD1.5 about 1 GB, SDXL 3.5 GB), large against the CUDA context and the
// tolerance so that a disagreement cannot hide inside it, and small enough
// that the store, its L3 copy and the L2 copies fit a 64 GiB disk.
const gpuModelScale = "0.5"

// gpuModelStore synthesizes full-size models for the given workflows only
// (the whole example set would be over 100 GB).
func gpuModelStore(t *testing.T, workflows ...string) string {
	t.Helper()
	wf := t.TempDir()
	for _, name := range workflows {
		data, err := os.ReadFile(filepath.Join("../examples/workflows", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(wf, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	out, err := exec.Command(filepath.Join(binDir, "kiln"), "models", "synth", "--dir", dir,
		"--from-workflows", wf, "--scale", gpuModelScale).CombinedOutput()
	if err != nil {
		t.Fatalf("models synth: %v\n%s", err, out)
	}
	return dir
}

func TestTorchGPULedgerMatchesNVML(t *testing.T) {
	requireTorch(t)
	base, name := nvmlUsed(t)
	t.Logf("GPU %s: %d bytes used before kiln", name, base)
	sd15 := "salad-comfyui-api__sd1.5-txt2img.api.json"
	sdxl := "comfyui__tests_inference_graphs_default_graph_sdxl1_0.api.json"
	k := &kilnProc{t: t, dataDir: t.TempDir(), models: gpuModelStore(t, sd15, sdxl), sets: torchSets(t, "cuda")}
	k.start(freePort(t))
	t.Cleanup(k.stop)

	type reading struct {
		when         string
		ledger, used uint64
	}
	var readings []reading
	read := func(when string) reading {
		t.Helper()
		used, _ := nvmlUsed(t)
		r := reading{when, vramReserved(t, k), used - base}
		t.Logf("%s: ledger %d bytes, NVML %d over the baseline", when, r.ledger, r.used)
		readings = append(readings, r)
		return r
	}
	for _, wf := range []string{sd15, sdxl} {
		id := k.submit(smallWorkflow(t, wf, 512, 4, 1), "interactive")
		waitFor(t, 5*time.Minute, "the GPU job to finish", func() bool {
			s := k.job(id).State
			if s == "failed" {
				t.Fatalf("job failed: %+v\n%s", k.job(id), k.logTail())
			}
			return s == "done"
		})
		if r := read("after " + wf); r.ledger < 512<<20 {
			t.Errorf("ledger holds %d bytes after a half-size %s job; the models did not load", r.ledger, wf)
		}
	}
	if code, ans := k.postJSON("/free", map[string]any{"unload_models": true}); code != 200 {
		t.Fatalf("/free: %d %v", code, ans)
	}
	waitFor(t, time.Minute, "the ledger to empty after /free", func() bool { return vramReserved(t, k) == 0 })
	context := read("after unloading every model").used
	if context > MaxContext {
		t.Errorf("%d bytes stay used after every model is unloaded, more than a CUDA context (%d)", context, MaxContext)
	}
	for _, r := range readings {
		diff := int64(r.used) - int64(context) - int64(r.ledger)
		t.Logf("%s: NVML less the context (%d) minus the ledger = %d bytes", r.when, context, diff)
		if diff < -AllocatorSlack || diff > AllocatorSlack {
			t.Errorf("%s: ledger %d and NVML %d less the context %d differ by %d bytes, more than %d",
				r.when, r.ledger, r.used, context, diff, AllocatorSlack)
		}
	}

	code, data := k.do("GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("metrics: HTTP %d", code)
	}
	for _, series := range []string{"kiln_device_memory_used_bytes", "kiln_device_utilization_ratio",
		"kiln_device_temperature_celsius", "kiln_device_degraded"} {
		if !strings.Contains(string(data), series+`{backend="nvml"`) {
			t.Errorf("metrics lack %s for the NVML device", series)
		}
	}
	for _, line := range splitLines(string(data)) {
		if strings.HasPrefix(line, "kiln_device_") {
			t.Log(line)
		}
	}
	// The worker's own load timings (L2 mapping to GPU tensors).
	for _, line := range splitLines(k.log.String()) {
		if i := strings.Index(line, "kiln-worker-torch: loaded"); i >= 0 {
			t.Log(strings.TrimRight(line[i:], `"}`))
		}
	}
}

// vramReserved sums kiln_device_ledger_reserved_bytes over devices from /metrics.
func vramReserved(t *testing.T, k *kilnProc) uint64 {
	t.Helper()
	_, data := k.do("GET", "/metrics", nil)
	var total float64
	for _, line := range splitLines(string(data)) {
		var dev string
		var v float64
		if n, _ := sscanMetric(line, "kiln_device_ledger_reserved_bytes", &dev, &v); n {
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
