package tests

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTuneAutoLive runs a real kiln with the background tuner on and a
// short interval, gives it a few dozen arrivals, and checks that a run
// happens on them: either a canary of the winner starts through the
// experiment controller, or the defaults are kept with a reason per kind.
// Runs before the arrivals are enough are skipped, and say so. The run,
// its outcome and its metric are visible in GET /v1/tune, /metrics and
// `kiln tune status`.
func TestTuneAutoLive(t *testing.T) {
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.01",
		"tune.auto=true", "tune.interval=2s", "tune.min_arrivals=20", "tune.kinds=[batching]",
		"tune.try_builtins=true", "tune.budget=4", "tune.repeats=2", "tune.holdout=0.5", "tune.timeout=30s")

	type runJSON struct {
		Outcome    string `json:"outcome"`
		Reason     string `json:"reason"`
		Arrivals   int    `json:"arrivals"`
		Experiment string `json:"experiment"`
		Kinds      []struct {
			Kind    string `json:"kind"`
			Note    string `json:"note"`
			SimRuns int    `json:"sim_runs"`
		} `json:"kinds"`
	}
	var st struct {
		Auto   bool              `json:"auto"`
		Counts map[string]uint64 `json:"counts"`
		Runs   []runJSON         `json:"runs"`
	}
	status := func() bool {
		code, body := k.do("GET", "/v1/tune", nil)
		if code != 200 {
			t.Fatalf("GET /v1/tune: HTTP %d %s", code, body)
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("GET /v1/tune: %v: %s", err, body)
		}
		return true
	}
	status()
	if !st.Auto {
		t.Fatal("GET /v1/tune says the tuner is off")
	}
	// The first run waits for the policy host to be ready (the built-ins
	// compile to WASM at start, seconds on a busy machine), then an
	// interval.
	waitFor(t, 45*time.Second, "a run skipped for want of arrivals", func() bool {
		status()
		return st.Counts["skipped_few_arrivals"] > 0
	})

	var ids []string
	for i := range 44 {
		wf := "salad-comfyui-api__sd1.5-txt2img.api.json"
		if i%3 == 0 {
			wf = "salad-comfyui-api__sdxl_txt2img-with-refiner.api.json"
		}
		ids = append(ids, k.submit(loadWorkflow(t, wf, 2, i), "batch"))
	}
	waitFor(t, 40*time.Second, "jobs done", func() bool {
		for _, id := range ids {
			if k.job(id).State != "done" {
				return false
			}
		}
		return true
	})
	var run runJSON
	waitFor(t, 30*time.Second, "a tuning run on the recorded arrivals", func() bool {
		status()
		for _, r := range st.Runs {
			if r.Outcome == "canary_started" || r.Outcome == "kept_defaults" {
				run = r
				return true
			}
		}
		return false
	})
	t.Logf("tuning run: %s: %s", run.Outcome, run.Reason)
	if run.Arrivals < 20 || len(run.Kinds) != 1 || run.Kinds[0].Kind != "batching" || run.Kinds[0].SimRuns < 2 || run.Reason == "" {
		t.Errorf("run %+v", run)
	}
	if run.Outcome == "canary_started" {
		code, body := k.do("GET", "/v1/experiments/"+run.Experiment, nil)
		if code != 200 || !strings.Contains(string(body), `"type":"canary"`) || !strings.Contains(string(body), `"kind":"batching"`) {
			t.Errorf("the canary %s: HTTP %d %s", run.Experiment, code, body)
		}
	} else if run.Kinds[0].Note == "" {
		t.Errorf("defaults kept without a reason: %+v", run)
	}
	_, metrics := k.do("GET", "/metrics", nil)
	if !strings.Contains(string(metrics), `kiln_tune_runs_total{outcome="`+run.Outcome+`"}`) {
		t.Error("/metrics lacks kiln_tune_runs_total")
	}
	out, err := exec.Command(filepath.Join(binDir, "kiln"), "tune", "status", "--addr", k.base).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the background tuner is on") || !strings.Contains(string(out), run.Outcome) {
		t.Errorf("kiln tune status: %v\n%s", err, out)
	}
}
