//go:build torch

package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestTorchWorkerStreamsThroughKiln runs one SD1.5 job twice through kiln
// with kiln-worker-torch on CPU: on a device that holds the checkpoint, and
// on one of 2 GiB whose room (1.1 GiB after headroom and the worker's
// context) is less than the checkpoint's 2.1 GB. The second is admitted
// streamed (protocol 1.2: the load carries vram_budget_bytes, the worker
// keeps that share resident and copies the rest every step), and its image
// is byte for byte the first one's.
func TestTorchWorkerStreamsThroughKiln(t *testing.T) {
	requireTorch(t)
	const size, steps = 64, 3
	run := func(memBytes string) ([]byte, int64) {
		sets := append(torchSets(t, "cpu"),
			"devices.simulated=[{name: cpu0, memory_bytes: "+memBytes+", h2d_bytes_per_s: 10e9, compute_factor: 0.02}]")
		k := startKiln(t, t.TempDir(), sets...)
		defer k.stop()
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
			t.Fatalf("outputs %+v", j.Outputs)
		}
		img, err := os.ReadFile(filepath.Join(k.dataDir, "output", j.Outputs[0].Subfolder, j.Outputs[0].Filename))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`kiln-worker-torch: loaded checkpoints/[^ ]+ \([^)]*\): \d+ bytes in [\d.]+ ms, (\d+) bytes streamed`).
			FindStringSubmatch(k.log.String())
		if m == nil {
			t.Fatalf("no checkpoint load in kiln's log:\n%s", k.logTail())
		}
		streamed, _ := strconv.ParseInt(m[1], 10, 64)
		return img, streamed
	}
	whole, streamedWhole := run("8589934592")
	small, streamedSmall := run("2147483648")
	if streamedWhole != 0 {
		t.Errorf("on 8 GiB the checkpoint streamed %d bytes", streamedWhole)
	}
	if streamedSmall <= 0 {
		t.Errorf("on 2 GiB the checkpoint streamed nothing")
	}
	if !bytes.Equal(whole, small) {
		t.Errorf("the streamed run's image differs from the resident run's (%d vs %d bytes)", len(small), len(whole))
	}
}
