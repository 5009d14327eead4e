package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/worker"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// TestComfyUIGPUConfig loads configs/comfyui-gpu.yaml with kiln's loader
// (unknown keys and invalid values fail here, as in `kiln config validate`)
// and checks that it is what docs/COMFYUI_ADAPTER.md says: real GPUs only,
// one ComfyUI per GPU through the kiln_comfy launcher, and a worker that
// kiln accepts on a node where NVML finds GPUs.
func TestComfyUIGPUConfig(t *testing.T) {
	const root = "../.."
	cfg, err := Load(LoadOptions{File: filepath.Join(root, "configs", "comfyui-gpu.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Devices.Backend != device.BackendNVML {
		t.Errorf("devices.backend = %q; want %q", cfg.Devices.Backend, device.BackendNVML)
	}
	w := cfg.Workers
	if w.PerDevice != 1 || w.Simulate {
		t.Errorf("workers.per_device = %d, simulate = %v; want one ComfyUI per GPU, not simulated", w.PerDevice, w.Simulate)
	}
	if !strings.HasPrefix(filepath.Base(w.Command), "python") {
		t.Errorf("workers.command = %q; want the ComfyUI installation's python", w.Command)
	}
	if len(w.Args) == 0 || w.Args[0] != "sdk/python/kiln-worker-comfy" || !slices.Contains(w.Args, "--comfyui") {
		t.Fatalf("workers.args = %q; want sdk/python/kiln-worker-comfy --comfyui DIR", w.Args)
	}
	launcher, err := os.ReadFile(filepath.Join(root, w.Args[0]))
	if err != nil || !strings.Contains(string(launcher), "kiln_comfy") {
		t.Errorf("%s does not start kiln_comfy: %v", w.Args[0], err)
	}
	if _, err := os.Stat(filepath.Join(root, "sdk", "python", "kiln_comfy", "__main__.py")); err != nil {
		t.Error(err)
	}
	if slices.Contains(w.Args, "--disable-smart-memory") {
		t.Error("--disable-smart-memory makes ComfyUI unload every model after each prompt, behind the ledger")
	}
	if err := worker.CheckWorker(w, []wire.DeviceInfo{{Index: 0, Name: "NVIDIA H100"}}); err != nil {
		t.Errorf("kiln would refuse this worker on a GPU node: %v", err)
	}
	if cfg.Tiers.RAM.CapacityBytes <= 0 || cfg.Tiers.Disk.CapacityBytes <= 0 {
		t.Errorf("tiers: ram %d, disk %d bytes; want both sized", cfg.Tiers.RAM.CapacityBytes, cfg.Tiers.Disk.CapacityBytes)
	}
	if cfg.Dispatch.WorkerContextBytes < 512<<20 {
		t.Errorf("dispatch.worker_context_bytes = %d; want at least a CUDA context and ComfyUI's reserve", cfg.Dispatch.WorkerContextBytes)
	}
}
