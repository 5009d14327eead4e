package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestClusterRescuesDirectJobs kills -9 a node holding a job it claimed
// when the job was submitted to it (no work message for JetStream to
// redeliver, internal/cluster rescue.go): another node queues it again
// once the dead node has been silent for ack_wait and the heartbeat's TTL,
// and runs it (attempt 2). Then it kills that node too: the rescue's
// message, the job's only one, is delivered again after ack_wait and the
// last node runs the job (attempt 3); the job is done once. Three nodes,
// random routing: jobs are submitted to node1 until one of them is claimed
// there at submit (its debug line says so).
func TestClusterRescuesDirectJobs(t *testing.T) {
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
			"cluster.ack_wait=2s", "cost.time_scale=0.3", "workers.per_device=1", "policies.routing=random"))
	}
	for _, k := range nodes {
		waitFor(t, 10*time.Second, k.base+" to see three healthy nodes", func() bool { return len(clusterNodes(t, k)) == 3 })
	}
	victim := nodes[0]
	direct := ""
	for i := 0; i < 24 && direct == ""; i++ {
		// 150 steps (at most), slowed by the time scale: still running
		// when each kill comes.
		id := victim.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 150, 3000+i), "interactive")
		waitFor(t, 5*time.Second, "the submit's debug line", func() bool {
			return strings.Contains(victim.log.String(), `"job":"`+id+`","claimed":`)
		})
		if strings.Contains(victim.log.String(), `"job":"`+id+`","claimed":true`) {
			direct = id
		}
	}
	if direct == "" {
		t.Fatal("node1 claimed none of 24 jobs submitted to it (random routing picks it a third of the time while it has room)")
	}
	waitFor(t, 20*time.Second, "the direct job to run on node1", func() bool {
		j := nodes[1].clusterJob(direct)
		return j.State == "running" && j.Node == "node1"
	})
	victim.kill9()
	killed := time.Now()
	var rescuer clusterJobJSON
	waitFor(t, 30*time.Second, "the direct job to run on node2 or node3", func() bool {
		rescuer = nodes[1].clusterJob(direct)
		return rescuer.Node == "node2" || rescuer.Node == "node3"
	})
	t.Logf("node1's direct job %s restarted on %s %s after the kill", direct, rescuer.Node, time.Since(killed).Round(time.Millisecond))
	rescued := false
	for _, k := range nodes[1:] {
		for _, line := range strings.Split(k.log.String(), "\n") {
			if strings.Contains(line, `"job":"`+direct+`"`) && strings.Contains(line, "queued a job again that its node claimed") {
				rescued = true
			}
		}
	}
	if !rescued {
		t.Fatalf("job %s moved to %s without a rescue in the survivors' logs", direct, rescuer.Node)
	}
	if rescuer.State != "running" || rescuer.Attempts != 2 {
		t.Fatalf("rescued job: %s on %s, attempts %d; want running, 2", rescuer.State, rescuer.Node, rescuer.Attempts)
	}

	// The rescuer dies too, while it runs the job.
	second, last, lastName := nodes[1], nodes[2], "node3"
	if rescuer.Node == "node3" {
		second, last, lastName = nodes[2], nodes[1], "node2"
	}
	second.kill9()
	killed = time.Now()
	waitFor(t, 60*time.Second, "the rescued job to finish on "+lastName+" after its rescuer died", func() bool {
		return last.clusterJob(direct).State == "done"
	})
	if j := last.clusterJob(direct); j.Node != lastName || j.Attempts != 3 {
		t.Fatalf("job rescued twice: done on %s after %d attempts; want %s, 3", j.Node, j.Attempts, lastName)
	}
	t.Logf("the job ran again on %s, done %s after its rescuer was killed", lastName, time.Since(killed).Round(time.Millisecond))
	t.Logf("rescue test took %s", time.Since(start).Round(time.Millisecond))
}
