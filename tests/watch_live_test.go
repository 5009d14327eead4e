package tests

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWatchLive loads and activates a policy by hand on a running kiln
// with traffic and sees the watch roll it back: slowsched (testdata) is a
// correct scheduler that spins for tens of milliseconds per decision, as
// long again as a job's run at this time scale, so latency regresses far
// beyond min_effect. The rollback is in the change log with its reason
// (kiln policy list), in the watch record (/v1/experiments/watches) and in
// /metrics.
func TestWatchLive(t *testing.T) {
	const window = 20 * time.Second
	module := buildPolicy(t, "./testdata/slowsched")
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.01", "policies.call_timeout=2s",
		"experiments.watch.enabled=true", "experiments.watch.window="+window.String())
	before := func() string {
		_, data := k.do("GET", "/v1/policies/scheduling", nil)
		var ki struct{ Active string }
		_ = json.Unmarshal(data, &ki)
		return ki.Active
	}()

	k.submitEvery(t, 100*time.Millisecond, []string{"salad-comfyui-api__sd1.5-txt2img.api.json"}, []string{"interactive", "batch"})

	type watch struct {
		ID           int
		State        string
		Reason       string
		RolledBackBy string `json:"rolled_back_by"`
		Change       struct{ Kind, Action, From, To string }
	}
	watches := func() []watch {
		_, data := k.do("GET", "/v1/experiments/watches", nil)
		var out struct{ Watches []watch }
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("watches: %v: %s", err, data)
		}
		return out.Watches
	}
	// A window of history before the change: the comparison's baseline.
	start := time.Now()
	waitFor(t, 2*window+10*time.Second, "a window of finished jobs before the change", func() bool {
		code, data := k.do("GET", "/metrics", nil)
		return code == http.StatusOK && time.Since(start) > window+6*time.Second && strings.Contains(string(data), "kiln_jobs_finished_total")
	})
	if code, data := k.admin("POST", "/v1/policies/scheduling?name=slowsched&activate=1&reason=by+hand", module); code != http.StatusCreated {
		t.Fatalf("load and activate slowsched: HTTP %d: %s", code, data)
	}
	if ws := watches(); len(ws) != 1 || ws[0].State != "watching" || !strings.HasPrefix(ws[0].Change.To, "slowsched@") {
		t.Fatalf("after the activation: watches %+v; want one open on slowsched", ws)
	}
	var w watch
	waitFor(t, window+20*time.Second, "the watch's verdict", func() bool {
		ws := watches()
		if len(ws) == 0 {
			return false
		}
		w = ws[0]
		return w.State != "watching"
	})
	t.Logf("watch %d: %s: %s", w.ID, w.State, w.Reason)
	if w.State != "rolled_back" || w.RolledBackBy == "" || !strings.Contains(w.Reason, w.RolledBackBy) {
		t.Fatalf("watch %+v; want rolled back, naming the metric", w)
	}

	_, data := k.do("GET", "/v1/policies/scheduling", nil)
	var ki struct {
		Active  string
		Changes []struct{ Action, From, To, Reason string }
	}
	if err := json.Unmarshal(data, &ki); err != nil {
		t.Fatalf("policies: %v: %s", err, data)
	}
	last := ki.Changes[len(ki.Changes)-1]
	if ki.Active != before || last.Action != "watch-rollback" || !strings.HasPrefix(last.From, "slowsched@") || !strings.Contains(last.Reason, w.RolledBackBy) {
		t.Errorf("scheduling after the watch: active %s, last change %+v; want %s again by a watch-rollback naming %s", ki.Active, last, before, w.RolledBackBy)
	}
	_, metrics := k.do("GET", "/metrics", nil)
	if want := `kiln_policy_watch_rollbacks_total{kind="scheduling",reason="` + w.RolledBackBy + `"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if !strings.Contains(string(metrics), "kiln_policy_watches_open 0") {
		t.Error("/metrics: kiln_policy_watches_open is not 0 after the watch")
	}
}

// TestWatchReplaysBalancingLive activates a balancing policy by hand on a
// running kiln with traffic of several models: the watch opens (the
// activation answers: the change hook runs with the policy host's lock
// held, and an earlier version of this replay deadlocked there), the
// router prices every placement under the old policy too, and the watch's
// verdict carries that comparison (replay_place_s).
func TestWatchReplaysBalancingLive(t *testing.T) {
	const window = 12 * time.Second
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.01", "experiments.watch.enabled=true", "experiments.watch.window="+window.String())
	k.submitEvery(t, 100*time.Millisecond, fourModels, []string{"batch"})
	time.Sleep(window + 2*time.Second) // a window of history before the change
	body, _ := json.Marshal(map[string]string{"name": "round-robin", "reason": "by hand"})
	if code, data := k.admin("POST", "/v1/policies/balancing/activate", body); code != http.StatusOK {
		t.Fatalf("activate round-robin: HTTP %d: %s", code, data)
	}
	type watch struct {
		State       string
		Reason      string
		Change      struct{ Kind, From, To string }
		Comparisons []struct {
			Metric  string
			Verdict string
			Before  float64
			After   float64
		}
	}
	var w watch
	waitFor(t, window+30*time.Second, "the balancing watch's verdict", func() bool {
		_, data := k.do("GET", "/v1/experiments/watches", nil)
		var out struct{ Watches []watch }
		if err := json.Unmarshal(data, &out); err != nil || len(out.Watches) == 0 {
			return false
		}
		w = out.Watches[0]
		return w.State != "watching"
	})
	t.Logf("watch of %s → %s: %s (%s)", w.Change.From, w.Change.To, w.State, w.Reason)
	for _, c := range w.Comparisons {
		if c.Metric == "replay_place_s" {
			t.Logf("replay_place_s: %s, %.2f s → %.2f s per sub-window", c.Verdict, c.Before, c.After)
			if c.Verdict == "insufficient_data" {
				t.Fatalf("the placement replay had too few sub-windows to judge: %+v", c)
			}
			return
		}
	}
	t.Fatalf("the balancing watch has no replay_place_s comparison: %+v", w)
}
