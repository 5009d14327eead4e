package tests

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// TestEvictionReplayLive runs an eviction switchback on a running kiln
// while jobs of several models flow, and checks that the experiment
// replays the node's job starts under both arms in ghost caches: its
// report carries the replay's gating comparison (issue 14: the eviction
// experiments' power comes from it), with windows of load time charged.
func TestEvictionReplayLive(t *testing.T) {
	replayLive(t, map[string]any{"kind": "eviction", "policy": "lru", "type": "switchback", "window": "2s", "burn_in": "200ms", "deadline": "60s"},
		"replay_load_s")
}

// TestPlacementReplayLive runs a balancing canary of round-robin against
// the default affinity on a running kiln: every placement is asked of
// both arms and priced, and the report carries that gating comparison
// with time charged in its windows.
func TestPlacementReplayLive(t *testing.T) {
	replayLive(t, map[string]any{"kind": "balancing", "policy": "round-robin", "type": "canary", "deadline": "60s"}, "replay_place_s")
}

// replayLive starts the experiment spec on a running kiln, submits jobs of
// four models until the report's comparison metric has three windows and
// a baseline that charged something, and checks that it gates.
func replayLive(t *testing.T, spec map[string]any, metric string) {
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.01", "experiments.interval=200ms", "experiments.pair_window=1s")
	body, _ := json.Marshal(spec)
	code, data := k.admin("POST", "/v1/experiments", body)
	if code != http.StatusCreated {
		t.Fatalf("start the %s %s: HTTP %d: %s", spec["kind"], spec["type"], code, data)
	}
	var started struct{ ID string }
	_ = json.Unmarshal(data, &started)

	stop := k.submitEvery(t, 50*time.Millisecond, fourModels, []string{"batch"})
	type comparison struct {
		Metric       string
		Windows      int
		BaselineMean float64 `json:"baseline_mean"`
		Gating       bool
	}
	var rep struct {
		State  string
		Report *struct{ Comparisons []comparison }
	}
	var replay comparison
	waitFor(t, 40*time.Second, "the replay's comparison with time charged in its windows", func() bool {
		_, data := k.do("GET", "/v1/experiments/"+started.ID, nil)
		rep.Report = nil
		_ = json.Unmarshal(data, &rep)
		if rep.Report == nil {
			return false
		}
		for _, c := range rep.Report.Comparisons {
			if c.Metric == metric {
				replay = c
				return c.Windows >= 3 && c.BaselineMean > 0
			}
		}
		return false
	})
	stop()
	if !replay.Gating {
		t.Errorf("the replay's comparison does not gate: %+v", replay)
	}
	if rep.State == "running" {
		if code, data := k.admin("POST", "/v1/experiments/"+started.ID+"/abort", nil); code != http.StatusOK {
			t.Errorf("abort: HTTP %d: %s", code, data)
		}
	}
}
