//go:build torch

package tests

import (
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// These tests need PyTorch and msgpack for /usr/bin/python3 (Debian:
// apt-get install python3-torch python3-msgpack) and run with
//
//	go test -tags torch -run Torch ./tests/
//
// (the Makefile's test-torch target). They skip when the packages are
// missing.

// torchPython is the interpreter kiln-worker-torch runs under: Debian's by
// default, or the one TORCH_PYTHON names (a CUDA build of PyTorch usually
// lives in a virtual environment).
var torchPython = func() string {
	if p := os.Getenv("TORCH_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}()

// requireTorch skips the test unless torchPython has torch and msgpack.
func requireTorch(t *testing.T) {
	t.Helper()
	out, err := exec.Command(torchPython, "-c", "import torch, msgpack").CombinedOutput()
	if err != nil {
		t.Skipf("%s lacks torch or msgpack (apt-get install python3-torch python3-msgpack): %v: %s",
			torchPython, err, strings.TrimSpace(string(out)))
	}
}

// torchSets are the --set overrides of configs/torch-cpu.yaml (or -gpu)
// for the harness, with the worker path made absolute.
func torchSets(t *testing.T, device string) []string {
	t.Helper()
	script, err := filepath.Abs("../sdk/python/kiln-worker-torch")
	if err != nil {
		t.Fatal(err)
	}
	sets := []string{
		"workers.command=" + torchPython,
		"workers.args=[" + script + ", --device, " + device + "]",
		"workers.per_device=1", "workers.start_timeout=60s", "workers.ping_timeout=10s",
		"workers.ping_interval=1s",
	}
	if device == "cpu" {
		sets = append(sets, "devices.backend=sim",
			"devices.simulated=[{name: cpu0, memory_bytes: 8589934592, h2d_bytes_per_s: 10e9, compute_factor: 0.02}]")
	} else {
		sets = append(sets, "devices.backend=nvml", "devices.headroom=0.1")
	}
	return sets
}

// smallWorkflow is a shared example workflow cut down to size × size pixels
// and the given steps.
func smallWorkflow(t *testing.T, name string, size, steps, seed int) map[string]any {
	t.Helper()
	g := loadWorkflow(t, name, steps, seed)
	for _, n := range g {
		node := n.(map[string]any)
		if strings.HasPrefix(node["class_type"].(string), "EmptyLatentImage") {
			in := node["inputs"].(map[string]any)
			in["width"], in["height"], in["batch_size"] = size, size, 1
		}
	}
	return g
}

func TestTorchWorkerRunsSharedWorkflow(t *testing.T) {
	requireTorch(t)
	k := startKiln(t, t.TempDir(), torchSets(t, "cpu")...)
	const size, steps = 128, 3
	id := k.submit(smallWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", size, steps, 7), "interactive")
	waitFor(t, 3*time.Minute, "the torch job to finish", func() bool {
		s := k.job(id).State
		if s == "failed" {
			t.Fatalf("job failed: %+v\n%s", k.job(id), k.logTail())
		}
		return s == "done"
	})
	j := k.job(id)
	if len(j.Outputs) != 1 {
		t.Fatalf("outputs %+v, want one image", j.Outputs)
	}
	f, err := os.Open(filepath.Join(k.dataDir, "output", j.Outputs[0].Subfolder, j.Outputs[0].Filename))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("output is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != size || b.Dy() != size {
		t.Errorf("image is %v, want %d×%d", b, size, size)
	}
	// The worker that ran it is the torch worker, and it reported real bytes.
	if !strings.Contains(k.log.String(), "kiln-worker-torch") {
		t.Errorf("kiln's log does not mention kiln-worker-torch:\n%s", k.logTail())
	}
	code, data := k.do("GET", "/metrics", nil)
	if code != 200 || !regexp.MustCompile(`(?m)^kiln_device_ledger_reserved_bytes\{[^}]*name="cpu0"`).Match(data) {
		t.Errorf("metrics lack the cpu0 ledger: %.1000s", data)
	}
	var ws struct{ Workers []json.RawMessage }
	_, wdata := k.do("GET", "/v1/workers", nil)
	if err := json.Unmarshal(wdata, &ws); err != nil || len(ws.Workers) != 1 {
		t.Errorf("workers: %s (%v)", wdata, err)
	}
}
