package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestClusterRescuesDirectJobs kills -9 a node holding a job it claimed
// when the job was submitted to it (no work message for JetStream to
// redeliver, internal/cluster rescue.go): the other node queues it again
// once the dead node has been silent for ack_wait and the heartbeat's TTL,
// runs it (attempt 2), and the job is done once. Two nodes, random
// routing: jobs are submitted to node1 until one of them is claimed there
// at submit (its debug line says so).
func TestClusterRescuesDirectJobs(t *testing.T) {
	start := time.Now()
	servers := startNATSCluster(t)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.client)
	}
	var nodes []*kilnProc
	for i := range 2 {
		nodes = append(nodes, startKiln(t, t.TempDir(),
			"cluster.nats="+strings.Join(urls, ","), fmt.Sprintf("cluster.node_id=node%d", i+1),
			"cluster.ack_wait=2s", "cost.time_scale=0.05", "workers.per_device=1", "policies.routing=random"))
	}
	for _, k := range nodes {
		waitFor(t, 10*time.Second, k.base+" to see two healthy nodes", func() bool { return len(clusterNodes(t, k)) == 2 })
	}
	victim, survivor := nodes[0], nodes[1]
	direct := ""
	for i := 0; i < 12 && direct == ""; i++ {
		// 150 steps: still running when the kill comes.
		id := victim.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 150, 3000+i), "interactive")
		waitFor(t, 5*time.Second, "the submit's debug line", func() bool {
			return strings.Contains(victim.log.String(), `"job":"`+id+`","claimed":`)
		})
		if strings.Contains(victim.log.String(), `"job":"`+id+`","claimed":true`) {
			direct = id
		}
	}
	if direct == "" {
		t.Fatal("node1 claimed none of 12 jobs submitted to it (random routing picks it half the time while it has room)")
	}
	waitFor(t, 20*time.Second, "the direct job to run on node1", func() bool {
		j := survivor.clusterJob(direct)
		return j.State == "running" && j.Node == "node1"
	})
	victim.kill9()
	killed := time.Now()
	waitFor(t, 30*time.Second, "the direct job to run on node2", func() bool { return survivor.clusterJob(direct).Node == "node2" })
	t.Logf("node1's direct job %s restarted on node2 %s after the kill", direct, time.Since(killed).Round(time.Millisecond))
	rescued := false
	for _, line := range strings.Split(survivor.log.String(), "\n") {
		if strings.Contains(line, `"job":"`+direct+`"`) && strings.Contains(line, "queued a job again that its node claimed") {
			rescued = true
		}
	}
	if !rescued {
		t.Fatalf("job %s moved to node2 without a rescue in its log", direct)
	}
	waitFor(t, 60*time.Second, "the direct job to finish", func() bool { return survivor.clusterJob(direct).State == "done" })
	if j := survivor.clusterJob(direct); j.Node != "node2" || j.Attempts != 2 {
		t.Fatalf("rescued job: node %s, attempts %d; want node2, 2", j.Node, j.Attempts)
	}
	t.Logf("rescue test took %s", time.Since(start).Round(time.Millisecond))
}
