package tests

import (
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fastCost makes the sim worker charge 1% of the published GPU times, so that
// hundreds of jobs run in seconds while still going through every step.
const fastCost = "cost.time_scale=0.01"

func TestTwoHundredJobsAllComplete(t *testing.T) {
	k := startKiln(t, t.TempDir(), fastCost)
	flows := []string{
		"salad-comfyui-api__sd1.5-txt2img.api.json",
		"comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json",
		"salad-comfyui-api__sdxl_txt2img-with-refiner.api.json",
		"comfyui__tests_inference_graphs_default_graph_sdxl1_0.api.json",
	}
	const n = 200
	ids := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			class := "batch"
			if i%4 == 0 {
				class = "interactive"
			}
			ids[i] = k.submit(loadWorkflow(t, flows[i%len(flows)], 8, i), class)
		}()
	}
	wg.Wait()
	waitFor(t, 4*time.Minute, "200 jobs to finish", func() bool {
		_, data := k.do("GET", "/v1/jobs?state=done&limit=10000", nil)
		var out struct{ Jobs []jobJSON }
		_ = json.Unmarshal(data, &out)
		return len(out.Jobs) == n
	})
	outputDir := filepath.Join(k.dataDir, "output")
	for _, id := range ids[:10] {
		j := k.job(id)
		if j.State != "done" || len(j.Outputs) == 0 {
			t.Fatalf("job %s: state %s, %d outputs", id, j.State, len(j.Outputs))
		}
		f, err := os.Open(filepath.Join(outputDir, j.Outputs[0].Subfolder, j.Outputs[0].Filename))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(f); err != nil {
			t.Fatalf("output of %s is not a PNG: %v", id, err)
		}
		f.Close()
	}
	code, data := k.do("GET", "/metrics", nil)
	if code != 200 || !strings.Contains(string(data), "kiln_job_latency_seconds_count") || !strings.Contains(string(data), `kiln_queue_depth{class="batch"}`) {
		t.Fatalf("metrics missing kiln series: HTTP %d\n%.2000s", code, data)
	}
}

func TestWorkerKilledMidJobStillCompletes(t *testing.T) {
	// One worker, slow steps: the job is surely mid-run when we kill it.
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.2", "workers.per_device=1",
		"devices.simulated=[{name: sim-gpu-0, memory_bytes: 25769803776, h2d_bytes_per_s: 25e9, compute_factor: 1}]")
	id := k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 60, 1), "interactive")
	var victim int
	waitFor(t, 60*time.Second, "the job to make progress", func() bool {
		j := k.job(id)
		if j.State == "running" && j.Progress != nil && j.Progress.Value >= 2 {
			for _, w := range k.workers() {
				if w.ID == j.Worker {
					victim = w.PID
				}
			}
			return victim > 0
		}
		if j.State == "done" {
			t.Fatal("job finished before the kill; the cost model is too fast for this test")
		}
		return false
	})
	if err := syscallKill(victim); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the job to complete after the crash", func() bool {
		return k.job(id).State == "done"
	})
	j := k.job(id)
	if j.Attempts != 2 {
		t.Fatalf("attempts = %d, want 2 (one lost to the crash)", j.Attempts)
	}
	restarts := 0
	for _, w := range k.workers() {
		restarts += w.Restarts
	}
	if restarts < 1 {
		t.Fatalf("worker restarts = %d, want ≥ 1", restarts)
	}
}

func TestKilnKilledLosesNoAcceptedJob(t *testing.T) {
	dataDir := t.TempDir()
	k := startKiln(t, dataDir, "cost.time_scale=0.05")
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 20, i), "batch"))
	}
	waitFor(t, 60*time.Second, "some jobs running", func() bool {
		_, data := k.do("GET", "/v1/jobs?state=running", nil)
		var out struct{ Jobs []jobJSON }
		_ = json.Unmarshal(data, &out)
		return len(out.Jobs) > 0
	})
	var pids []int
	for _, w := range k.workers() {
		if w.PID > 0 {
			pids = append(pids, w.PID)
		}
	}
	// Every child of kiln: the workers and the storage and loader plugins.
	children := childPIDs(k.cmd.Process.Pid)
	if len(children) <= len(pids) {
		t.Fatalf("kiln has %d children, want its %d workers and its plugins", len(children), len(pids))
	}
	pids = append(pids, children...)
	k.kill9()
	// Workers and plugins die with kiln (parent-death signal): no orphans.
	waitFor(t, 10*time.Second, "worker and plugin processes to die with kiln", func() bool {
		for _, pid := range pids {
			if processAlive(pid) {
				return false
			}
		}
		return true
	})
	k.start(freePort(t))
	waitFor(t, 3*time.Minute, "every accepted job to complete after the restart", func() bool {
		for _, id := range ids {
			if k.job(id).State != "done" {
				return false
			}
		}
		return true
	})
}

func TestBadInputGetsJSONErrors(t *testing.T) {
	k := startKiln(t, t.TempDir(), "api.max_body_bytes=4096")
	good := loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, 1)
	goodJSON, _ := json.Marshal(good)
	for _, tc := range []struct {
		name     string
		method   string
		path     string
		body     string
		wantCode int
		wantType string
	}{
		{"malformed JSON", "POST", "/v1/jobs", `{"workflow": {`, 400, "invalid_json"},
		{"not an object", "POST", "/v1/jobs", `[1,2]`, 400, "invalid_json"},
		{"unknown class", "POST", "/v1/jobs", fmt.Sprintf(`{"workflow": %s, "class": "urgent"}`, goodJSON), 400, "invalid_class"},
		{"missing workflow", "POST", "/v1/jobs", `{"class": "batch"}`, 400, "missing_workflow"},
		{"unknown field", "POST", "/v1/jobs", fmt.Sprintf(`{"workflow": %s, "priority": 1}`, goodJSON), 400, "unknown_field"},
		{"oversize body", "POST", "/v1/jobs", `{"workflow": {"1": {"class_type": "X", "inputs": {"t": "` + strings.Repeat("a", 8000) + `"}}}}`, 413, "body_too_large"},
		{"unknown model", "POST", "/v1/jobs", `{"workflow": {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.safetensors"}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}}`, 400, "model_not_found"},
		{"unknown job", "GET", "/v1/jobs/doesnotexist", "", 404, "job_not_found"},
		{"bad state filter", "GET", "/v1/jobs?state=sleeping", "", 400, "invalid_state"},
		{"unknown route", "GET", "/v1/nothing", "", 404, "not_found"},
		{"wrong method", "PUT", "/v1/jobs", "", 405, "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, data := k.do(tc.method, tc.path, []byte(tc.body))
			if code != tc.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", code, tc.wantCode, data)
			}
			var env struct {
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal(data, &env); err != nil || env.Error.Message == "" {
				t.Fatalf("not a JSON error body: %s (%v)", data, err)
			}
			if tc.wantType != "" && env.Error.Type != tc.wantType {
				t.Fatalf("error type %q, want %q: %s", env.Error.Type, tc.wantType, data)
			}
		})
	}
	// kiln is still healthy after all of that.
	if code, _ := k.do("GET", "/healthz", nil); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
}

// TestRelativeDataDir runs a job with --data-dir relative to kiln's working
// directory: the paths kiln hands to plugins and workers must still resolve
// in theirs (the demo and most operators use relative paths).
func TestRelativeDataDir(t *testing.T) {
	rel, err := os.MkdirTemp(".", ".tmp-reldata-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rel) })
	k := startKiln(t, rel, fastCost)
	id := k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, 1), "interactive")
	waitFor(t, 60*time.Second, "the job to finish", func() bool {
		st := k.job(id).State
		if st == "failed" {
			t.Fatalf("job failed: %v", *k.job(id).Error)
		}
		return st == "done"
	})
}
