package tests

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStallingPoliciesCannotStallTheNode activates, in a running kiln with
// one 11 GiB device and one worker, policy modules whose answers are well
// formed but stall the work: an eviction policy that always answers
// NO_DECISION while alternating jobs need its models evicted (an SD1.5 and
// an SDXL checkpoint do not fit together), then a scheduling policy that
// answers OK and dispatches nothing. Before kiln counted these as faults, the
// first left a job "loading models" forever and the second starved the
// queue. Every job must finish, stall faults must be counted, and the kind
// rolled back to the policy that served before.
func TestStallingPoliciesCannotStallTheNode(t *testing.T) {
	module := buildPolicy(t, "../internal/policy/testdata/hostile")
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.01", "workers.per_device=1",
		"devices.backend=sim",
		"devices.simulated=[{name: small, memory_bytes: 11811160064, h2d_bytes_per_s: 12e9, compute_factor: 1}]")
	type kindInfo struct {
		Active  string
		Changes []struct{ Action, Reason string }
	}
	info := func(kind string) kindInfo {
		_, data := k.admin("GET", "/v1/policies/"+kind, nil)
		var ki kindInfo
		if err := json.Unmarshal(data, &ki); err != nil {
			t.Fatalf("policies: %v: %s", err, data)
		}
		return ki
	}
	stallFaults := func(kind string) float64 {
		_, data := k.do("GET", "/metrics", nil)
		re := regexp.MustCompile(`kiln_policy_faults_total\{kind="` + kind + `",policy="hostile",reason="stall",version="\d+"\} (\S+)`)
		var n float64
		for _, m := range re.FindAllStringSubmatch(string(data), -1) {
			v, _ := strconv.ParseFloat(m[1], 64)
			n += v
		}
		return n
	}
	sd15, sdxl := "salad-comfyui-api__sd1.5-txt2img.api.json", "saintno-comfyui-sdk__example-txt2img-workflow.api.json"

	for _, tc := range []struct {
		kind, mode, why string
	}{
		{"eviction", "10", "no decision where room is needed"},
		{"scheduling", "9", "OK with nothing dispatched"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			before := info(tc.kind).Active
			if code, data := k.admin("POST", "/v1/policies/"+tc.kind+"?name=hostile&activate=1&reason=test", module); code != http.StatusCreated && code != http.StatusOK {
				t.Fatalf("load hostile module: HTTP %d: %s", code, data)
			}
			body, _ := json.Marshal(map[string]any{"name": "mode", "value": json.Number(tc.mode)})
			if code, data := k.admin("PUT", "/v1/policies/"+tc.kind+"/params", body); code != http.StatusNoContent && code != http.StatusOK {
				t.Fatalf("set mode %s: HTTP %d: %s", tc.mode, code, data)
			}
			if got := info(tc.kind).Active; !strings.HasPrefix(got, "hostile") {
				t.Fatalf("active %s policy %q, want the hostile module", tc.kind, got)
			}
			var ids []string
			for i := range 6 {
				wf := sd15
				if i%2 == 1 {
					wf = sdxl
				}
				ids = append(ids, k.submit(loadWorkflow(t, wf, 2, i), "batch"))
			}
			waitFor(t, 90*time.Second, "every job to finish under a stalling "+tc.kind+" policy ("+tc.why+")", func() bool {
				for _, id := range ids {
					switch st := k.job(id).State; st {
					case "done":
					case "failed", "cancelled":
						t.Fatalf("job %s %s", id, st)
					default:
						return false
					}
				}
				return true
			})
			if n := stallFaults(tc.kind); n == 0 {
				t.Errorf("no stall faults counted for the %s policy", tc.kind)
			}
			ki := info(tc.kind)
			if ki.Active != before {
				t.Errorf("active %s policy %q after repeated stalls, want the rollback to %q", tc.kind, ki.Active, before)
			} else if last := ki.Changes[len(ki.Changes)-1]; last.Action != "auto-rollback" || !strings.Contains(last.Reason, "stall") {
				t.Errorf("last change %+v, want an auto-rollback that names the stall", last)
			}
		})
	}
}
