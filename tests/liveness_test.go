package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStallingPoliciesCannotStallTheNode reproduces issue 21 as its author
// did: in a running kiln with one 11 GiB device, policy modules whose
// answers are well formed but stall the work are loaded and activated with
// `kiln policy load --activate` and set misbehaving with `kiln policy set`,
// while alternating jobs need their models evicted (an SD1.5 and an SDXL
// checkpoint do not fit together). The cases: an eviction policy that
// answers OK with no victims, or NO_DECISION; a scheduling policy that
// answers OK and dispatches nothing, or NO_DECISION; a balancing policy
// that places nowhere; and, with two workers on the device, the eviction
// policy that answers OK with no victims (two jobs waiting for room
// deadlocked both workers). Before kiln counted these as faults, the first
// left a job "loading models" forever and the scheduling one starved the
// queue. Every job must finish, stall faults must be counted, and the kind
// rolled back to the policy that served before.
func TestStallingPoliciesCannotStallTheNode(t *testing.T) {
	module := filepath.Join(t.TempDir(), "hostile.wasm")
	if err := os.WriteFile(module, buildPolicy(t, "../internal/policy/testdata/hostile"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, perDevice := range []string{"1", "2"} {
		k := startKiln(t, t.TempDir(), "cost.time_scale=0.01", "workers.per_device="+perDevice,
			"devices.backend=sim",
			"devices.simulated=[{name: small, memory_bytes: 11811160064, h2d_bytes_per_s: 12e9, compute_factor: 1}]")
		cases := []struct{ kind, mode, why string }{
			{"eviction", "9", "OK with no victims where room is needed"},
			{"eviction", "10", "no decision where room is needed"},
			{"scheduling", "9", "OK with nothing dispatched"},
			{"scheduling", "10", "no decision while jobs wait"},
			{"balancing", "10", "no worker while one is idle"},
		}
		if perDevice == "2" {
			cases = cases[:1]
		}
		for _, tc := range cases {
			t.Run(tc.kind+"/mode "+tc.mode+"/"+perDevice+" workers", func(t *testing.T) {
				stallingPolicyCase(t, k, module, tc.kind, tc.mode, tc.why)
			})
		}
	}
}

// stallingPolicyCase activates the hostile module as kind's policy in mode
// on k, runs six alternating jobs, and checks they all finish, that stall
// faults were counted and that the kind was rolled back for them.
func stallingPolicyCase(t *testing.T, k *kilnProc, module, kind, mode, why string) {
	type kindInfo struct {
		Active  string
		Changes []struct{ Action, Reason string }
	}
	info := func() kindInfo {
		_, data := k.admin("GET", "/v1/policies/"+kind, nil)
		var ki kindInfo
		if err := json.Unmarshal(data, &ki); err != nil {
			t.Fatalf("policies: %v: %s", err, data)
		}
		return ki
	}
	stallFaults := func() float64 {
		_, data := k.do("GET", "/metrics", nil)
		re := regexp.MustCompile(`kiln_policy_faults_total\{kind="` + kind + `",policy="hostile",reason="stall",version="\d+"\} (\S+)`)
		var n float64
		for _, m := range re.FindAllStringSubmatch(string(data), -1) {
			v, _ := strconv.ParseFloat(m[1], 64)
			n += v
		}
		return n
	}
	cli := func(args ...string) {
		t.Helper()
		args = append(args, "--addr", k.base, "--data-dir", k.dataDir)
		if out, err := exec.Command(filepath.Join(binDir, "kiln"), args...).CombinedOutput(); err != nil {
			t.Fatalf("kiln %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	before, stallsBefore := info().Active, stallFaults()
	cli("policy", "load", module, "--kind", kind, "--activate", "--reason", "issue 21")
	cli("policy", "set", kind, "mode="+mode)
	if got := info().Active; !strings.HasPrefix(got, "hostile") {
		t.Fatalf("active %s policy %q, want the hostile module", kind, got)
	}
	sd15, sdxl := "salad-comfyui-api__sd1.5-txt2img.api.json", "saintno-comfyui-sdk__example-txt2img-workflow.api.json"
	var ids []string
	for i := range 6 {
		wf := sd15
		if i%2 == 1 {
			wf = sdxl
		}
		ids = append(ids, k.submit(loadWorkflow(t, wf, 2, i), "batch"))
	}
	waitFor(t, 90*time.Second, "every job to finish under a stalling "+kind+" policy ("+why+")", func() bool {
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
	if n := stallFaults() - stallsBefore; n == 0 {
		t.Errorf("no stall faults counted for the %s policy", kind)
	}
	ki := info()
	if ki.Active != before {
		t.Errorf("active %s policy %q after repeated stalls, want the rollback to %q", kind, ki.Active, before)
	} else if last := ki.Changes[len(ki.Changes)-1]; last.Action != "auto-rollback" || !strings.Contains(last.Reason, "stall") {
		t.Errorf("last change %+v, want an auto-rollback that names the stall", last)
	}
}

// TestStallingRoutingPolicyCannotStallTheCluster is the routing kind's
// case (ABI 1.2) on a live cluster of two nodes: a routing policy that
// answers NO_DECISION while both nodes are healthy and can hold every job
// is a stall fault on the node that routes, answered by the native policy
// and rolled back, and every job finishes.
func TestStallingRoutingPolicyCannotStallTheCluster(t *testing.T) {
	module := filepath.Join(t.TempDir(), "hostile.wasm")
	if err := os.WriteFile(module, buildPolicy(t, "../internal/policy/testdata/hostile"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := startNATSAlone(t)
	var nodes []*kilnProc
	for i := range 2 {
		nodes = append(nodes, startKiln(t, t.TempDir(), "cluster.nats="+url, "cluster.node_id=node"+strconv.Itoa(i+1),
			"cost.time_scale=0.01", "workers.per_device=1", "policies.routing=affinity"))
	}
	for _, k := range nodes {
		waitFor(t, 10*time.Second, k.base+" to see two healthy nodes", func() bool {
			n := 0
			for _, v := range clusterNodes(t, k) {
				if v.Healthy {
					n++
				}
			}
			return n == 2
		})
	}
	stallingPolicyCase(t, nodes[0], module, "routing", "10", "no node while two are healthy")
}
