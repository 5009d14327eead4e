package tests

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCanaryLive runs a canary through the real admin API of a running kiln
// while jobs flow: mutations without the token are refused, bad input gets
// a JSON 400, and the canary reaches a verdict whose record (decisions with
// their evidence) is served by the API, exported in /metrics and kept in
// the data dir across a restart.
func TestCanaryLive(t *testing.T) {
	dataDir := t.TempDir()
	// Two-second pair windows: a live canary's tests need about twenty.
	k := startKiln(t, dataDir, "cost.time_scale=0.01", "experiments.interval=200ms", "experiments.pair_window=2s")
	call := func(method, path string, body any, token bool) (int, []byte) {
		t.Helper()
		b, ok := body.(string)
		if !ok {
			j, _ := json.Marshal(body)
			b = string(j)
		}
		if token {
			return k.admin(method, path, []byte(b))
		}
		return k.do(method, path, []byte(b))
	}
	spec := map[string]any{"kind": "scheduling", "policy": "edf", "type": "canary", "steps": []int{50, 100},
		"step_duration": "1s", "min_samples": 10, "deadline": "90s", "guards": []string{"faults==0", "error_rate<=0.05"}}

	if code, _ := call("POST", "/v1/experiments", spec, false); code != http.StatusUnauthorized {
		t.Fatalf("start without the admin token: HTTP %d, want 401", code)
	}
	for _, bad := range []any{
		map[string]any{"kind": "scheduling", "policy": "edf", "type": "blue-green"},
		map[string]any{"kind": "scheduling", "policy": "no-such-policy", "type": "canary"},
		map[string]any{"kind": "scheduling", "policy": "edf", "type": "canary", "guards": []string{"p95 is fine"}},
		map[string]any{"kind": "scheduling", "policy": "edf", "type": "canary", "colour": "red"},
		"{not json",
	} {
		code, data := call("POST", "/v1/experiments", bad, true)
		var env struct {
			Error struct{ Type, Message string }
		}
		if code != http.StatusBadRequest || json.Unmarshal(data, &env) != nil || env.Error.Message == "" {
			t.Errorf("bad experiment %v: HTTP %d %s, want a JSON 400", bad, code, data)
		}
	}

	code, data := call("POST", "/v1/experiments", spec, true)
	if code != http.StatusCreated {
		t.Fatalf("start canary: HTTP %d: %s", code, data)
	}
	var started struct{ ID string }
	_ = json.Unmarshal(data, &started)
	if code, _ := call("POST", "/v1/experiments", spec, true); code != http.StatusConflict {
		t.Errorf("second experiment while one runs: HTTP %d, want 409", code)
	}

	// Traffic until the canary decides.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 2, i), []string{"interactive", "batch"}[i%2])
			time.Sleep(20 * time.Millisecond)
		}
	}()
	type record struct {
		ID, State, Verdict, Reason string
		Decisions                  []struct {
			Action   string
			Evidence *struct {
				Arms []struct {
					Arm    string
					Policy string
					N      int
				}
				Comparisons []struct{ Metric string }
			}
		}
		Assignment struct {
			CandidateWorkers []string `json:"candidate_workers"`
		}
	}
	var rec record
	waitFor(t, 4*time.Minute, "the canary's verdict", func() bool {
		_, data := call("GET", "/v1/experiments/"+started.ID, nil, false)
		rec = record{}
		_ = json.Unmarshal(data, &rec)
		return rec.State != "" && rec.State != "running"
	})
	close(stop)
	wg.Wait()
	t.Logf("canary %s: %s (%s), %d decisions", rec.ID, rec.State, rec.Reason, len(rec.Decisions))
	// Inconclusive is a verdict too: on a loaded machine the jobs of 90 s
	// may not give the latency test enough windows, and then the canary must
	// say so and leave the baseline serving rather than guess.
	switch rec.State {
	case "promoted", "rolled_back":
	case "inconclusive":
		if !strings.Contains(rec.Reason, "baseline keeps serving") || !strings.Contains(rec.Reason, "detectable") {
			t.Errorf("an inconclusive verdict must say what it could have caught: %q", rec.Reason)
		}
		_, data := call("GET", "/v1/policies/scheduling", nil, false)
		if strings.Contains(string(data), `"active":"edf@1"`) {
			t.Errorf("inconclusive, yet the candidate is active: %s", data)
		}
	default:
		t.Fatalf("state %s, want promoted, rolled_back or inconclusive", rec.State)
	}
	if len(rec.Assignment.CandidateWorkers) == 0 {
		t.Error("the worker split was not recorded")
	}
	last := rec.Decisions[len(rec.Decisions)-1]
	if last.Evidence == nil || len(last.Evidence.Arms) != 2 {
		t.Fatalf("the last decision has no evidence: %+v", last)
	}
	counted := false
	for _, d := range rec.Decisions {
		if d.Action == "advance" && d.Evidence != nil && d.Evidence.Arms[0].N > 0 && d.Evidence.Arms[1].N > 0 && len(d.Evidence.Comparisons) > 0 {
			counted = true
		}
	}
	if rec.State == "promoted" && !counted {
		t.Error("promoted without a step that compared both arms")
	}
	if rec.State == "promoted" {
		_, data := call("GET", "/v1/policies/scheduling", nil, false)
		if !strings.Contains(string(data), `"active":"edf@1"`) {
			t.Errorf("promoted, but the active scheduling policy is not edf@1: %s", data)
		}
	}
	_, metrics := k.do("GET", "/metrics", nil)
	if !strings.Contains(string(metrics), `kiln_experiment_jobs_total{arm="candidate",experiment="`+rec.ID) {
		t.Error("/metrics lacks the per-arm experiment metrics")
	}
	if code, _ := call("POST", "/v1/experiments/"+rec.ID+"/abort", nil, true); code != http.StatusConflict {
		t.Errorf("abort of a finished experiment: HTTP %d, want 409", code)
	}
	if code, _ := call("POST", "/v1/experiments/exp-nope/abort", nil, true); code != http.StatusNotFound {
		t.Errorf("abort of an unknown experiment: HTTP %d, want 404", code)
	}

	// The record survives a restart.
	k.stop()
	k.start(freePort(t))
	_, data = call("GET", "/v1/experiments", nil, false)
	if !strings.Contains(string(data), rec.ID) || !strings.Contains(string(data), rec.State) {
		t.Errorf("after a restart the experiment list lacks %s (%s): %s", rec.ID, rec.State, data)
	}

	// A canary running when kiln stops resumes after the restart; an
	// operator can then abort it.
	long := map[string]any{"kind": "balancing", "policy": "round-robin", "type": "canary", "step_duration": "1h", "deadline": "2h"}
	code, data = call("POST", "/v1/experiments", long, true)
	if code != http.StatusCreated {
		t.Fatalf("start a long canary: HTTP %d: %s", code, data)
	}
	var running struct{ ID string }
	_ = json.Unmarshal(data, &running)
	k.stop()
	k.start(freePort(t))
	var after struct {
		State     string
		Decisions []struct{ Action string }
	}
	resumed := func() bool {
		for _, d := range after.Decisions {
			if d.Action == "resume" {
				return true
			}
		}
		return false
	}
	waitFor(t, 30*time.Second, "the canary to resume", func() bool {
		_, data := call("GET", "/v1/experiments/"+running.ID, nil, false)
		after.Decisions = nil
		_ = json.Unmarshal(data, &after)
		return resumed() || after.State != "running"
	})
	if after.State != "running" || !resumed() {
		t.Fatalf("after a restart: state %s, decisions %+v; want running and resumed", after.State, after.Decisions)
	}
	code, data = call("POST", "/v1/experiments/"+running.ID+"/abort", map[string]string{"reason": "test"}, true)
	if code != http.StatusOK || !strings.Contains(string(data), `"state":"aborted"`) {
		t.Errorf("abort: HTTP %d: %s", code, data)
	}
}
