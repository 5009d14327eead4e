package tests

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// startNATSAlone starts one `kiln nats` server without cluster routes
// (replicas 1): enough for tests of placement, cheaper than three.
func startNATSAlone(t *testing.T) string {
	t.Helper()
	port := portOf(freePort(t))
	p := startNATS(t, "nats://127.0.0.1:"+port, "nats", "--port", port, "--cluster-port", "0",
		"--store-dir", filepath.Join(t.TempDir(), "js"))
	p.waitUp(t)
	return p.client
}

// startTwoNodes starts two kiln nodes, node1 and node2, on the NATS server
// at url with sets on top, and waits until each sees both healthy.
func startTwoNodes(t *testing.T, url string, sets ...string) []*kilnProc {
	t.Helper()
	var nodes []*kilnProc
	for i := range 2 {
		nodes = append(nodes, startKiln(t, t.TempDir(),
			append([]string{"cluster.nats=" + url, fmt.Sprintf("cluster.node_id=node%d", i+1)}, sets...)...))
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
	return nodes
}

// TestClusterAffinityLive runs the affinity routing policy (the default)
// on two live nodes: repeated jobs for one model go to the node that holds
// it, whichever node they are submitted to, and a burst of them spills to
// the other node once the holder's queue passes the load bound, while the
// holder keeps most of it.
func TestClusterAffinityLive(t *testing.T) {
	start := time.Now()
	url := startNATSAlone(t)
	nodes := startTwoNodes(t, url, "cost.time_scale=0.05", "workers.per_device=1", "policies.routing=affinity")
	const model = "checkpoints/dreamshaper_8.safetensors"
	const steps = 40
	wf := func(seed int) map[string]any {
		return loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", steps, seed)
	}
	runOne := func(k *kilnProc, seed int) string {
		t.Helper()
		id := k.submit(wf(seed), "batch")
		var j clusterJobJSON
		waitFor(t, 15*time.Second, "job "+id+" to finish", func() bool {
			j = k.clusterJob(id)
			return j.State == "done"
		})
		return j.Node
	}

	// The first job goes to either node (neither holds the model); it
	// becomes the holder once its heartbeat shows the model in VRAM.
	holder := runOne(nodes[0], 1)
	other := "node1"
	if holder == "node1" {
		other = "node2"
	}
	for _, k := range nodes {
		waitFor(t, 5*time.Second, k.base+" to see "+holder+" holding the model", func() bool {
			return slices.Contains(clusterNodes(t, k)[holder].VRAM, model)
		})
	}
	// Repeated jobs, one at a time, submitted to either node: every one
	// runs where the model is.
	for i := range 4 {
		if got := runOne(nodes[i%2], 10+i); got != holder {
			t.Fatalf("repeated job %d for %s ran on %s, not on %s, which holds the model in VRAM", i+1, model, got, holder)
		}
	}

	// A burst, submitted to one node (whose view counts every job it
	// routed): the holder (two workers) takes jobs until its wait passes
	// spill × (the mean wait + one job), about six at spill 1.2; then the
	// other node gets some, and the holder about half of the rest as the
	// waits even out (13 of 20 here; 16 when spill was 1.5).
	var burst []string
	for i := range 20 {
		burst = append(burst, nodes[0].submit(wf(100+i), "batch"))
	}
	ranOn := map[string]int{}
	waitFor(t, 40*time.Second, "the burst to finish", func() bool {
		clear(ranOn)
		for _, id := range burst {
			j := nodes[0].clusterJob(id)
			if j.State != "done" {
				return false
			}
			ranOn[j.Node]++
		}
		return true
	})
	t.Logf("a burst of %d jobs for the model %s holds: %d on it, %d spilled to %s (%s)",
		len(burst), holder, ranOn[holder], ranOn[other], other, strings.TrimSpace(fmt.Sprint(ranOn)))
	// Bounded, not eager: the first jobs of the burst, well under the
	// bound, all went to the holder.
	for i, id := range burst[:6] {
		if j := nodes[0].clusterJob(id); j.Node != holder {
			t.Errorf("job %d of the burst ran on %s, though %s holds the model and was under its bound", i+1, j.Node, holder)
		}
	}
	if ranOn[other] == 0 {
		t.Errorf("no job of the burst spilled to %s: affinity queued all %d on %s", other, len(burst), holder)
	}
	if ranOn[holder] <= len(burst)/2 {
		t.Errorf("the holder %s ran %d of %d jobs of the burst; affinity should keep most of them there", holder, ranOn[holder], len(burst))
	}
	t.Logf("affinity test took %s", time.Since(start).Round(time.Millisecond))
}

// TestClusterRoutingExperimentLive runs an A/B test of routing policies on
// a live two-node cluster: started on node1, it routes the jobs submitted
// there by their arm (random or the active affinity) and counts each one
// when the cluster's registry says it ended, also those that ran on node2;
// node2 follows it (node1's heartbeat carries the split), routes the jobs
// submitted to it by their arms too, and node1 counts those as well. When
// the experiment ends, node2 stops following.
func TestClusterRoutingExperimentLive(t *testing.T) {
	url := startNATSAlone(t)
	nodes := startTwoNodes(t, url, "cost.time_scale=0.05", "workers.per_device=1", "policies.routing=affinity", "experiments.interval=1s")
	code, data := nodes[0].admin("POST", "/v1/experiments", []byte(`{"kind":"routing","policy":"random","type":"ab"}`))
	var rec struct {
		ID   string `json:"id"`
		Spec struct {
			Unit string `json:"unit"`
		} `json:"spec"`
	}
	if code != 201 || json.Unmarshal(data, &rec) != nil || rec.ID == "" {
		t.Fatalf("start a routing A/B test on node1: HTTP %d: %s", code, data)
	}
	if rec.Spec.Unit != "traffic" {
		t.Errorf("a routing experiment's unit is %q, want traffic (each job routed by its arm)", rec.Spec.Unit)
	}
	waitFor(t, 10*time.Second, "node2 to follow node1's routing experiment", func() bool {
		return strings.Contains(nodes[1].log.String(), "following the cluster's routing experiment")
	})
	// node2 says so where an operator looks.
	var listed struct {
		Following *struct {
			Experiment string `json:"experiment"`
			Node       string `json:"node"`
			Share      int    `json:"share"`
		} `json:"following"`
	}
	if code, data := nodes[1].do("GET", "/v1/experiments", nil); code != 200 || json.Unmarshal(data, &listed) != nil ||
		listed.Following == nil || listed.Following.Experiment != rec.ID || listed.Following.Node != "node1" || listed.Following.Share != 50 {
		t.Errorf("GET /v1/experiments on node2: HTTP %d %s; want following %s of node1 at 50%%", code, data, rec.ID)
	}
	if code, out, _ := kilnCLI(t, "experiment", "list", "--addr", nodes[1].base); code != 0 || !strings.Contains(out, "follows routing ab "+rec.ID+" of node node1") {
		t.Errorf("kiln experiment list on node2: exit %d: %q", code, out)
	}
	var counted []string
	for i := range 16 {
		counted = append(counted, nodes[0].submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, 300+i), "batch"))
	}
	for i := range 8 {
		counted = append(counted, nodes[1].submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, 400+i), "batch"))
	}
	ranOn := map[string]int{}
	waitFor(t, 30*time.Second, "the jobs to finish", func() bool {
		clear(ranOn)
		for _, id := range counted {
			j := nodes[0].clusterJob(id)
			if j.State != "done" {
				return false
			}
			ranOn[j.Node]++
		}
		return true
	})
	var arms [2]int
	waitFor(t, 10*time.Second, "the experiment to count the 24 jobs of both nodes", func() bool {
		code, data := nodes[0].do("GET", "/v1/experiments/"+rec.ID, nil)
		var got struct {
			Report *struct {
				Arms [2]struct {
					N int `json:"n"`
				} `json:"arms"`
			} `json:"report"`
		}
		if code != 200 || json.Unmarshal(data, &got) != nil {
			t.Fatalf("GET /v1/experiments/%s: HTTP %d: %s", rec.ID, code, data)
		}
		if got.Report == nil {
			return false
		}
		arms = [2]int{got.Report.Arms[0].N, got.Report.Arms[1].N}
		return arms[0]+arms[1] >= len(counted)
	})
	if arms[0]+arms[1] != len(counted) || arms[0] < 4 || arms[1] < 4 {
		t.Errorf("arms counted %v jobs; want the %d submitted to node1 and node2, split about evenly", arms, len(counted))
	}
	if ranOn["node2"] == 0 {
		t.Errorf("no job ran on node2 (%v): the count did not cover jobs that ended on another node", ranOn)
	}
	t.Logf("routing A/B on node1, followed by node2: arms counted %v of the %d jobs; the jobs ran %v", arms, len(counted), ranOn)
	// The routing shadow put node1's 16 jobs to every built-in routing
	// policy and priced their answers beside the live ones.
	var shadow struct {
		Decisions  int `json:"decisions"`
		Candidates []struct {
			Policy string  `json:"policy"`
			Agreed float64 `json:"agreed"`
		} `json:"candidates"`
	}
	var shadowJSON []byte
	waitFor(t, 10*time.Second, "node1's routing shadow to judge its 16 decisions", func() bool {
		code, data := nodes[0].do("GET", "/v1/cluster/shadow", nil)
		shadowJSON = data
		if code != 200 || json.Unmarshal(data, &shadow) != nil {
			t.Fatalf("GET /v1/cluster/shadow: HTTP %d: %s", code, data)
		}
		return shadow.Decisions >= 16
	})
	if len(shadow.Candidates) != 3 {
		t.Errorf("routing shadow candidates %+v; want the three built-ins", shadow.Candidates)
	}
	t.Logf("node1's routing shadow: %s", shadowJSON)
	if code, out, errOut := kilnCLI(t, "experiment", "shadow", "--routing", "--addr", nodes[0].base); code != 0 ||
		!strings.Contains(out, "affinity@1") || !strings.Contains(out, "(live decisions)") {
		t.Errorf("kiln experiment shadow --routing: exit %d, stdout %q, stderr %q", code, out, errOut)
	} else {
		t.Logf("kiln experiment shadow --routing:\n%s", out)
	}
	if code, data := nodes[1].admin("POST", "/v1/experiments", []byte(`{"kind":"routing","policy":"least-loaded","type":"ab"}`)); code != 409 {
		t.Errorf("a second routing experiment on the follower node2: HTTP %d %s, want 409", code, data)
	}
	if code, data := nodes[0].admin("POST", "/v1/experiments/"+rec.ID+"/abort", nil); code != 200 {
		t.Fatalf("abort: HTTP %d: %s", code, data)
	}
	waitFor(t, 10*time.Second, "node2 to stop following", func() bool {
		return strings.Contains(nodes[1].log.String(), "stopped following the cluster's routing experiment")
	})
}
