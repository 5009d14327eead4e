package tests

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHostilePolicyOnLiveTraffic activates a misbehaving scheduling policy
// (an infinite loop, then a panic) in a running kiln while jobs flow, through
// the real admin API. Every job still completes — the native scheduler
// answers for the module — the faults are counted, and repeated faults roll
// the kind back to the policy that served before.
func TestHostilePolicyOnLiveTraffic(t *testing.T) {
	module := buildPolicy(t, "../internal/policy/testdata/hostile")
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.01", "policies.call_timeout=20ms")
	admin := k.admin
	type kindInfo struct {
		Active   string
		Versions []struct {
			Name   string
			Faults int64
		}
	}
	scheduling := func() kindInfo {
		_, data := admin("GET", "/v1/policies/scheduling", nil)
		var ki kindInfo
		if err := json.Unmarshal(data, &ki); err != nil {
			t.Fatalf("policies: %v: %s", err, data)
		}
		return ki
	}
	before := scheduling().Active

	if code, data := admin("POST", "/v1/policies/scheduling?name=hostile&activate=1&reason=test", module); code != http.StatusCreated {
		t.Fatalf("load hostile module: HTTP %d: %s", code, data)
	}
	if got := scheduling().Active; !strings.HasPrefix(got, "hostile") {
		t.Fatalf("active scheduling policy %q, want the hostile module", got)
	}
	for _, mode := range []float64{1, 3} { // infinite loop, panic
		body, _ := json.Marshal(map[string]any{"name": "mode", "value": mode})
		if code, data := admin("PUT", "/v1/policies/scheduling/params", body); code != http.StatusNoContent {
			// After a rollback the hostile module is no longer active; the
			// point of the next round is made already.
			if !strings.Contains(string(data), "param") {
				t.Fatalf("set mode %v: HTTP %d: %s", mode, code, data)
			}
		}
		var ids []string
		for i := 0; i < 6; i++ {
			ids = append(ids, k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, i), "batch"))
		}
		waitFor(t, 90*time.Second, "every job to finish under the hostile policy", func() bool {
			for _, id := range ids {
				if k.job(id).State != "done" {
					return false
				}
			}
			return true
		})
	}
	ki := scheduling()
	var faults int64
	for _, v := range ki.Versions {
		if v.Name == "hostile" {
			faults += v.Faults
		}
	}
	if faults == 0 {
		t.Fatal("the hostile module's faults were not counted")
	}
	if ki.Active != before {
		t.Fatalf("after repeated faults the active scheduling policy is %q, want the rollback to %q", ki.Active, before)
	}
	if code, _ := k.do("GET", "/healthz", nil); code != http.StatusOK {
		t.Fatal("kiln unhealthy after the hostile policy")
	}
}
