package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsProc is one `kiln nats` server of a test cluster.
type natsProc struct {
	args   []string // kiln's, from "nats": a restart reuses its ports and store
	cmd    *exec.Cmd
	client string // nats://127.0.0.1:P
	log    *syncBuffer
	exited chan struct{}
}

// startNATS starts a `kiln nats` server with args, which the test kills
// at its end (with its log if it failed), and waits until it takes
// clients on client (nats://127.0.0.1:P).
func startNATS(t *testing.T, client string, args ...string) *natsProc {
	t.Helper()
	p := &natsProc{args: args, client: client, log: &syncBuffer{}}
	p.start(t)
	t.Cleanup(func() {
		p.kill9()
		if t.Failed() {
			t.Logf("nats %s log, last lines:\n%s", p.client, tail(p.log.String(), 3000))
		}
	})
	return p
}

// start runs the server (again, after kill9).
func (p *natsProc) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kiln"), p.args...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited
}

// kill9 kills the server as a crash would.
func (p *natsProc) kill9() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// waitUp waits until the server takes clients.
func (p *natsProc) waitUp(t *testing.T) {
	t.Helper()
	addr := strings.TrimPrefix(p.client, "nats://")
	waitFor(t, 20*time.Second, "nats "+addr+" to take clients", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// startNATSCluster starts three `kiln nats` servers routed to each other,
// each with its own JetStream store, and waits until each takes clients.
func startNATSCluster(t *testing.T) []*natsProc {
	t.Helper()
	// Every probe listener stays open until all six ports are chosen: a
	// closed probe's port can come back from the next probe at once, and
	// one server's cluster port was once another's client port ("address
	// already in use" in a fresh-clone CI run).
	var probes []net.Listener
	defer func() {
		for _, ln := range probes {
			ln.Close()
		}
	}()
	pick := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		probes = append(probes, ln)
		return portOf(ln.Addr().String())
	}
	var clientPorts, clusterPorts []string
	for range 3 {
		clientPorts = append(clientPorts, pick())
		clusterPorts = append(clusterPorts, pick())
	}
	for _, ln := range probes {
		ln.Close()
	}
	probes = nil
	var out []*natsProc
	for i := range 3 {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, "nats://127.0.0.1:"+clusterPorts[j])
			}
		}
		out = append(out, startNATS(t, "nats://127.0.0.1:"+clientPorts[i], "nats", "--port", clientPorts[i],
			"--cluster-port", clusterPorts[i], "--routes", strings.Join(routes, ","),
			"--store-dir", filepath.Join(t.TempDir(), "js")))
	}
	for _, p := range out {
		p.waitUp(t)
	}
	return out
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestClusterThreeNodes runs a kiln cluster of real processes on loopback:
// three `kiln nats` servers (cluster routes, JetStream, R3) and three kiln
// nodes. Jobs submitted to any node on both APIs are in the replicated
// registry before the answer, a resubmission with the same client id
// returns the same job, every job finishes exactly once with its node
// named, outputs are served by every node, a SIGKILLed kiln node loses no
// job (its jobs are redelivered), a dead node leaves the node list, and a
// SIGKILLed NATS server leaves the cluster serving.
func TestClusterThreeNodes(t *testing.T) {
	start := time.Now()
	servers := startNATSCluster(t)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.client)
	}
	var nodes []*kilnProc
	for i := range 3 {
		nodes = append(nodes, startKiln(t, t.TempDir(),
			"cluster.nats="+strings.Join(urls, ","), fmt.Sprintf("cluster.node_id=node%d", i+1),
			// A dead node's jobs go elsewhere 2 s after its last sign of life.
			"cluster.ack_wait=2s",
			"cost.time_scale=0.05", "workers.per_device=1",
			// Spread the jobs: affinity would keep this test's one model
			// on the nodes that loaded it first (its loads are priced at
			// real speed, its runs at time_scale), and node2 or node3 must hold
			// running jobs when one is killed.
			"policies.routing=random"))
	}

	// Every node routes to every node: each one's view has three healthy
	// nodes (a node's /readyz is 200 once its healthy heartbeat is stored;
	// the others' watches see it within milliseconds).
	for _, k := range nodes {
		waitFor(t, 5*time.Second, k.base+" to see three healthy nodes", func() bool {
			n := 0
			for _, v := range clusterNodes(t, k) {
				if v.Healthy {
					n++
				}
			}
			return n == 3
		})
	}

	// The test's own view of JetStream: the registry, read directly.
	nc, js := connectJetStream(t, strings.Join(urls, ","))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	for _, name := range []string{"KILN_WORK", "KV_KILN_jobs", "KV_KILN_nodes", "OBJ_KILN_outputs"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas, want 3", name, r)
		}
	}
	// Read from the stream's leader (STREAM.MSG.GET), which has every write
	// the quorum acknowledged: a direct get may be served by a follower.
	inRegistry := func(id string) {
		t.Helper()
		req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV.KILN_jobs." + id})
		msg, err := nc.Request("$JS.API.STREAM.MSG.GET.KV_KILN_jobs", req, 5*time.Second)
		var resp struct {
			Message *struct{ Data []byte } `json:"message"`
		}
		if err != nil || json.Unmarshal(msg.Data, &resp) != nil || resp.Message == nil ||
			!bytes.Contains(resp.Message.Data, []byte(`"id":"`+id+`"`)) {
			t.Fatalf("job %s answered but not in the replicated registry: %v %s", id, err, msg.Data)
		}
	}

	// A ComfyUI client connected to node1 follows its prompts wherever
	// they run.
	ws := dialWS(t, nodes[0], "cluster-test")

	// Submit on every node, both APIs.
	var ids []string
	for i := range 18 {
		k := nodes[i%3]
		// 60 steps: long enough that jobs still run when the submits and
		// checks below are done, even in a race build on a busy machine.
		wf := loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 60, 1000+i)
		var id string
		if i%2 == 0 {
			id = k.submit(wf, "batch")
		} else {
			id = fmt.Sprintf("prompt-%d-%d", i, start.UnixNano())
			code, data := postPrompt(t, k, wf, id)
			if code != 200 {
				t.Fatalf("POST /prompt to node%d: HTTP %d: %s", i%3+1, code, data)
			}
		}
		inRegistry(id)
		ids = append(ids, id)
	}

	// Idempotent resubmission, to another node: the same job, not a new one.
	wf := loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 20, 7)
	body, _ := json.Marshal(map[string]any{"workflow": wf, "class": "interactive"})
	var idemID string
	for i, k := range nodes {
		code, data := k.requestHeader("POST", "/v1/jobs", body, "Idempotency-Key", "cluster-test-key")
		want := http.StatusAccepted
		if i > 0 {
			want = http.StatusOK
		}
		var ans struct {
			ID      string `json:"id"`
			Existed bool   `json:"existed"`
		}
		if code != want || json.Unmarshal(data, &ans) != nil || ans.ID == "" || ans.Existed != (i > 0) {
			t.Fatalf("Idempotency-Key submit %d to node%d: HTTP %d %s; want %d", i+1, i+1, code, data, want)
		}
		if idemID != "" && ans.ID != idemID {
			t.Fatalf("Idempotency-Key retry on node%d made job %s, the first made %s", i+1, ans.ID, idemID)
		}
		idemID = ans.ID
	}
	inRegistry(idemID)
	ids = append(ids, idemID)
	code, data := postPrompt(t, nodes[2], loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 60, 1001), ids[1])
	var pr struct {
		PromptID string `json:"prompt_id"`
	}
	if code != 200 || json.Unmarshal(data, &pr) != nil || pr.PromptID != ids[1] {
		t.Fatalf("resubmitted prompt_id %s to node3: HTTP %d %s", ids[1], code, data)
	}
	if n := countJobs(t, nodes[0], ""); n != len(ids) {
		t.Fatalf("the cluster lists %d jobs after %d distinct submissions and 3 retries", n, len(ids))
	}

	// Every node answers for every job, with its node named.
	for _, k := range nodes {
		for _, id := range ids[:3] {
			if j := k.clusterJob(id); j.ID != id {
				t.Fatalf("GET /v1/jobs/%s on %s: %+v", id, k.base, j)
			}
		}
	}

	// Kill node2 or node3 (SIGKILL), whichever is first seen running jobs
	// (node1 keeps the websocket): its jobs are redelivered.
	var running []string
	victimName := ""
	waitFor(t, 20*time.Second, "node2 or node3 to run a job", func() bool {
		code, data := nodes[0].do("GET", "/v1/jobs?state=running", nil)
		var list struct{ Jobs []clusterJobJSON }
		if code != 200 || json.Unmarshal(data, &list) != nil {
			t.Fatalf("GET /v1/jobs?state=running: HTTP %d: %s", code, data)
		}
		byNode := map[string][]string{}
		for _, j := range list.Jobs {
			byNode[j.Node] = append(byNode[j.Node], j.ID)
		}
		for _, n := range []string{"node2", "node3"} {
			if len(byNode[n]) > 0 {
				victimName, running = n, byNode[n]
				return true
			}
		}
		return false
	})
	victim, other := nodes[2], nodes[1]
	if victimName == "node2" {
		victim, other = nodes[1], nodes[2]
	}
	survivors := []*kilnProc{nodes[0], other}
	victim.kill9()
	// What the victim held when it died, by the registry (a job it finished
	// between the check above and the kill is not among them).
	held := running[:0]
	for _, id := range running {
		if j := nodes[0].clusterJob(id); j.State == "running" && j.Node == victimName {
			held = append(held, id)
		}
	}
	running = held
	killedAt := time.Now()
	t.Logf("killed %s running %d jobs at %s", victimName, len(running), killedAt.Sub(start).Round(time.Millisecond))
	// Its running jobs restart on another node within about ack_wait (2 s).
	waitFor(t, 15*time.Second, victimName+"'s running jobs to restart elsewhere", func() bool {
		for _, id := range running {
			if j := nodes[0].clusterJob(id); j.Node == victimName {
				return false
			}
		}
		return true
	})
	t.Logf("%s's %d running jobs restarted elsewhere %s after the kill (cluster.ack_wait=2s)",
		victimName, len(running), time.Since(killedAt).Round(time.Millisecond))
	// Those of them that the victim claimed when they were submitted to
	// it had no work message for JetStream to redeliver: a survivor must
	// have queued each again (internal/cluster rescue.go), as its log says.
	direct := 0
	for _, id := range running {
		if !strings.Contains(victim.log.String(), `"job":"`+id+`","claimed":true`) {
			continue
		}
		direct++
		rescued := false
		for _, k := range survivors {
			for _, line := range strings.Split(k.log.String(), "\n") {
				if strings.Contains(line, `"job":"`+id+`"`) && strings.Contains(line, "queued a job again that its node claimed") {
					rescued = true
				}
			}
		}
		if !rescued {
			t.Errorf("job %s, claimed by %s when it was submitted there, restarted elsewhere without a rescue in the survivors' logs", id, victimName)
		}
	}
	t.Logf("%d of them were claimed by %s at submit (no work message) and rescued by the survivors", direct, victimName)

	// Kill one NATS server: the cluster keeps serving, and takes new jobs.
	servers[0].kill9()
	for i := range 4 {
		k := survivors[i%2]
		id := k.submitRetrying(t, loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 10, 5000+i))
		ids = append(ids, id)
	}

	// Every job finishes, once, on a live node; the killed node's running
	// jobs ran again elsewhere.
	final := map[string]clusterJobJSON{}
	var notDone, notDoneID string // the first job not done at the last look, for a timeout's message
	allDone := func() bool {
		for _, id := range ids {
			j := survivors[1].clusterJob(id)
			if j.State != "done" {
				notDone = fmt.Sprintf("%s %s on %q after %d attempts", id, j.State, j.Node, j.Attempts)
				notDoneID = id
				return false
			}
			final[id] = j
		}
		return true
	}
	for deadline := time.Now().Add(45 * time.Second); !allDone(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 45s waiting for every job to finish; at the last look job %s\n%s",
				notDone, jobStory(nc, notDoneID, nodes))
		}
	}
	for _, id := range running {
		j := final[id]
		if j.Node == victimName || j.Attempts < 2 {
			t.Errorf("job %s, running on %s when it was killed, finished on %s after %d attempts", id, victimName, j.Node, j.Attempts)
		}
	}
	// The list is node1's watch of the registry: it trails by milliseconds.
	for _, k := range survivors {
		waitFor(t, 10*time.Second, k.base+"'s list to show every job done, each once", func() bool {
			done, all := countJobs(t, k, "done"), countJobs(t, k, "")
			if done != len(ids) || all != len(ids) {
				t.Logf("%s lists %d jobs, %d done; want %d", k.base, all, done, len(ids))
				time.Sleep(500 * time.Millisecond)
				return false
			}
			return true
		})
	}

	// The client on node1 heard every prompt finish, also those run by
	// node2 and node3 (forwarded over NATS).
	succeeded := map[string]bool{}
	wsDeadline := time.After(10 * time.Second)
	want := 0
	for _, id := range ids {
		if strings.HasPrefix(id, "prompt-") && final[id].Node != "node1" {
			want++
		}
	}
	for heard := 0; heard < want; {
		select {
		case m, ok := <-ws.msgs:
			if !ok {
				t.Fatal("node1's websocket closed")
			}
			d, _ := m["data"].(map[string]any)
			id, _ := d["prompt_id"].(string)
			if m["type"] == "execution_success" && !succeeded[id] && final[id].Node != "node1" && final[id].Node != "" {
				succeeded[id] = true
				heard++
			}
		case <-wsDeadline:
			t.Fatalf("the websocket on node1 heard %d of the %d prompts that other nodes ran finish", len(succeeded), want)
		}
	}
	t.Logf("the websocket on node1 heard all %d prompts run by other nodes finish", want)

	// Outputs: every live node serves every image, with the same bytes.
	for _, id := range append([]string{ids[0], ids[len(ids)-1]}, running...) {
		j := final[id]
		if len(j.Outputs) == 0 {
			t.Fatalf("job %s done without outputs", id)
		}
		o := j.Outputs[0]
		q := url.Values{"filename": {o.Filename}, "subfolder": {o.Subfolder}, "type": {"output"}}
		var first []byte
		for _, k := range survivors {
			code, png := k.do("GET", "/view?"+q.Encode(), nil)
			// While a node reconnects after the NATS server kill above,
			// the object store answers 503 "retry later": a client
			// retries, and so does the test, for a bounded time.
			for deadline := time.Now().Add(15 * time.Second); code == http.StatusServiceUnavailable && time.Now().Before(deadline); {
				time.Sleep(250 * time.Millisecond)
				code, png = k.do("GET", "/view?"+q.Encode(), nil)
			}
			if code != 200 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
				t.Fatalf("/view of %s (from %s) on %s: HTTP %d, %d bytes", id, j.Node, k.base, code, len(png))
			}
			if first != nil && !bytes.Equal(first, png) {
				t.Fatalf("/view of %s differs between nodes", id)
			}
			first = png
		}
	}

	// The dead node left the node list; the others publish their state.
	waitFor(t, 15*time.Second, victimName+" to leave the node list", func() bool {
		live := clusterNodes(t, nodes[0])
		_, dead := live[victimName]
		return !dead && len(live) == 2
	})
	// Its queue adopted and drained, its consumers are deleted: JetStream
	// keeps no consumer for a node that died.
	// (after its heartbeat has been missing for cluster.retireGrace, 12 s)
	waitFor(t, 30*time.Second, victimName+"'s consumers to be deleted", func() bool {
		return len(nodeConsumers(t, nc, victimName)) == 0
	})
	if n := len(nodeConsumers(t, nc, "node1")); n != 2 {
		t.Errorf("node1, alive, has %d consumers of its routed jobs; want 2 (one per class)", n)
	}
	t.Logf("%s's consumers deleted %s after the kill", victimName, time.Since(killedAt).Round(time.Millisecond))
	// Only the dead node's: a node that had just joined (consumers made,
	// no heartbeat yet) never lost its own.
	for _, k := range survivors {
		if strings.Contains(k.log.String(), "created this node's work consumer again") {
			t.Errorf("%s had its consumers deleted while alive:\n%s", k.base, k.logTail())
		}
	}
	// Each survivor has loaded models by now: it publishes the load rates
	// it measured (host → device from its workers' loads, disk → RAM and
	// source → disk from its tiers), which affinity prices loads with.
	for id, n := range clusterNodes(t, survivors[1]) {
		if !n.Healthy || n.Workers == 0 || n.UsableVRAM == 0 || len(n.VRAM)+len(n.RAM)+len(n.Disk) == 0 {
			t.Errorf("node %s's published state is thin: %+v", id, n)
		}
		if n.H2DBytesPerS == 0 || n.DiskBytesPerS == 0 || n.RemoteBytesPerS == 0 {
			t.Errorf("node %s publishes a load rate of 0 after its loads: %+v", id, n)
		}
		t.Logf("node %s's load rates: host→device %.3g B/s, disk→RAM %.3g B/s, source→disk %.3g B/s",
			id, float64(n.H2DBytesPerS), float64(n.DiskBytesPerS), float64(n.RemoteBytesPerS))
	}
	// Cancel through the node that does not run the job: the request goes
	// to the node that does, which stops its worker and records it.
	long := nodes[0].submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 150, 99), "interactive")
	var runner clusterJobJSON
	waitFor(t, 15*time.Second, "the long job to run", func() bool {
		runner = nodes[0].clusterJob(long)
		return runner.State == "running"
	})
	canceller := nodes[0]
	if runner.Node == "node1" {
		canceller = survivors[1]
	}
	if code, data := canceller.do("DELETE", "/v1/jobs/"+long, nil); code != 200 {
		t.Fatalf("cancel job %s (running on %s) through %s: HTTP %d: %s", long, runner.Node, canceller.base, code, data)
	}
	if j := nodes[0].clusterJob(long); j.State != "cancelled" {
		t.Fatalf("job %s after its cancel answered 200: %s", long, j.State)
	}
	t.Logf("cluster test took %s", time.Since(start).Round(time.Millisecond))
}

// jobStory is what a stuck job's timeout needs to explain itself: its
// record as the registry's leader has it (without the workflow: node,
// target, direct, rescue, token, attempts) and every line of each node's
// log (node1, node2, node3 in order, a killed one's up to its death) that
// names it.
func jobStory(nc *nats.Conn, id string, nodes []*kilnProc) string {
	var b strings.Builder
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV.KILN_jobs." + id})
	var resp struct {
		Message *struct{ Data []byte } `json:"message"`
	}
	if msg, err := nc.Request("$JS.API.STREAM.MSG.GET.KV_KILN_jobs", req, 5*time.Second); err != nil {
		fmt.Fprintf(&b, "registry: %v\n", err)
	} else if json.Unmarshal(msg.Data, &resp) != nil || resp.Message == nil {
		fmt.Fprintf(&b, "registry: %s\n", msg.Data)
	} else {
		var rec map[string]any
		_ = json.Unmarshal(resp.Message.Data, &rec)
		delete(rec, "workflow")
		data, _ := json.Marshal(rec)
		fmt.Fprintf(&b, "registry: %s\n", data)
	}
	for i, k := range nodes {
		fmt.Fprintf(&b, "node%d's log about it:\n", i+1)
		for _, line := range strings.Split(k.log.String(), "\n") {
			if strings.Contains(line, id) {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

type clusterJobJSON struct {
	jobJSON
	Node string `json:"node"`
}

func (k *kilnProc) clusterJob(id string) clusterJobJSON {
	k.t.Helper()
	code, data := k.do("GET", "/v1/jobs/"+id, nil)
	if code != 200 {
		k.t.Fatalf("GET /v1/jobs/%s on %s: HTTP %d: %s", id, k.base, code, data)
	}
	var j clusterJobJSON
	if err := json.Unmarshal(data, &j); err != nil {
		k.t.Fatal(err)
	}
	return j
}

// submitRetrying submits to /v1/jobs, retrying a 503 (JetStream electing
// a new leader after a server died) for up to 30 s with the same
// Idempotency-Key, as a careful client would. A stream whose leader died
// has none until a follower's election timer fires, 4 to 9 s after the
// last heartbeat (nats-server's raft defaults) plus a campaign of up to
// 0.8 s, and longer on a loaded machine; one kiln submit waits up to 10 s
// for it (submitTimeout) before its 503. A budget of 10 s was one attempt:
// the first submit after the kill got its 503 after 10 s and the test gave
// up (KILN_WORK's leader killed, 3 busy loops beside the test on 2 cores).
func (k *kilnProc) submitRetrying(t *testing.T, wf map[string]any) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"workflow": wf, "class": "batch"})
	key := fmt.Sprintf("retry-%d", time.Now().UnixNano())
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, data := k.requestHeader("POST", "/v1/jobs", body, "Idempotency-Key", key)
		if code == http.StatusAccepted || code == http.StatusOK {
			var ans struct{ ID string }
			if err := json.Unmarshal(data, &ans); err != nil || ans.ID == "" {
				t.Fatalf("submit answer %s: %v", data, err)
			}
			return ans.ID
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("submit to %s with a NATS server down: HTTP %d: %s", k.base, code, data)
		}
		t.Logf("submit to %s: 503 (%s); retrying", k.base, data)
		time.Sleep(200 * time.Millisecond)
	}
}

func (k *kilnProc) requestHeader(method, path string, body []byte, header, value string) (int, []byte) {
	k.t.Helper()
	req, err := http.NewRequest(method, k.base+path, bytes.NewReader(body))
	if err != nil {
		k.t.Fatal(err)
	}
	req.Header.Set(header, value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func postPrompt(t *testing.T, k *kilnProc, wf map[string]any, promptID string) (int, []byte) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"prompt": wf, "prompt_id": promptID, "client_id": "cluster-test"})
	return k.do("POST", "/prompt", body)
}

func countJobs(t *testing.T, k *kilnProc, state string) int {
	t.Helper()
	code, data := k.do("GET", "/v1/jobs?limit=10000&state="+state, nil)
	var out struct{ Jobs []jobJSON }
	if code != 200 || json.Unmarshal(data, &out) != nil {
		t.Fatalf("GET /v1/jobs: HTTP %d: %s", code, data)
	}
	return len(out.Jobs)
}

type clusterNodeJSON struct {
	ID         string `json:"id"`
	Healthy    bool   `json:"healthy"`
	Workers    int    `json:"workers"`
	UsableVRAM uint64 `json:"usable_vram_bytes"`
	// Load rates, bytes/s.
	H2DBytesPerS    uint64   `json:"h2d_bytes_per_s"`
	DiskBytesPerS   uint64   `json:"disk_bytes_per_s"`
	RemoteBytesPerS uint64   `json:"remote_bytes_per_s"`
	VRAM            []string `json:"vram"`
	RAM             []string `json:"ram"`
	Disk            []string `json:"disk"`
}

func clusterNodes(t *testing.T, k *kilnProc) map[string]clusterNodeJSON {
	t.Helper()
	code, data := k.do("GET", "/v1/cluster", nil)
	var out struct{ Nodes []clusterNodeJSON }
	if code != 200 || json.Unmarshal(data, &out) != nil {
		t.Fatalf("GET /v1/cluster: HTTP %d: %s", code, data)
	}
	m := map[string]clusterNodeJSON{}
	for _, n := range out.Nodes {
		m[n.ID] = n
	}
	return m
}

// connectJetStream connects the test itself to the NATS servers at urls
// (comma-separated), to read or write what the nodes keep there; closed
// at the test's end.
func connectJetStream(t *testing.T, urls string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(urls, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
