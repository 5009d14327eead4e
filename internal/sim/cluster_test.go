package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func runCluster(t testing.TB, cfg ClusterConfig, models []Model, reqs []Request, seed int64) *Report {
	t.Helper()
	rep, err := RunCluster(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{Wall: fakeWall(), Seed: seed})
	if err != nil {
		t.Fatalf("RunCluster: %v", err)
	}
	return rep
}

func reportJSON(t testing.TB, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// clusterWorkload is many checkpoints, by Zipf popularity, on small nodes:
// no node's RAM holds them all, so where a job goes decides what it loads.
func clusterWorkload(t testing.TB, jobs int) ([]Model, []Request) {
	t.Helper()
	models, reqs, err := Generate(GenConfig{Kind: KindZipf, Jobs: jobs, Rate: 1.2, Checkpoints: 24, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	return models, reqs
}

func clusterNode(routing string) Config {
	c := node(1, 2, 40*gib, "lru") // 40 GiB: Flux in bf16 fits
	c.Headroom = 0.2
	c.RAMBytes = 40e9
	c.Policies.Routing = routing
	return c
}

// TestOneNodeClusterIsRun: RunCluster with one node is Run, byte for byte.
func TestOneNodeClusterIsRun(t *testing.T) {
	models, reqs := clusterWorkload(t, 120)
	one := runCluster(t, ClusterConfig{Node: clusterNode("affinity"), Nodes: 1, NetworkDelay: time.Millisecond}, models, reqs, 3)
	alone := run(t, clusterNode("affinity"), models, reqs)
	alone.Seed = one.Seed
	if a, b := reportJSON(t, one), reportJSON(t, alone); a != b {
		t.Errorf("one-node cluster and Run differ:\n%s\n%s", a, b)
	}
	if one.Cluster != nil {
		t.Error("a one-node run reports a cluster section")
	}
}

// TestClusterRouting runs one multi-node workload under each built-in
// routing policy: every job is routed to a node and completes, the
// cluster section adds up, a run replays exactly from its seed, and
// affinity — which sends a job where its checkpoint already is — makes
// fewer cold loads than random routing and than least-loaded.
func TestClusterRouting(t *testing.T) {
	models, reqs := clusterWorkload(t, 600)
	const nodes = 4
	cold := map[string]int64{}
	for _, routing := range []string{"random", "least-loaded", "affinity"} {
		cfg := ClusterConfig{Node: clusterNode(routing), Nodes: nodes, NetworkDelay: 2 * time.Millisecond}
		rep := runCluster(t, cfg, models, reqs, 5)
		c := rep.Cluster
		if c == nil || c.Nodes != nodes || len(c.JobsPerNode) != nodes || len(c.ColdLoadsPerNode) != nodes {
			t.Fatalf("%s: cluster section %+v", routing, c)
		}
		if rep.Completed != len(reqs) || rep.Failed != 0 || c.Unrouted != 0 {
			t.Errorf("%s: completed %d, failed %d, unrouted %d of %d", routing, rep.Completed, rep.Failed, c.Unrouted, len(reqs))
		}
		sum, coldSum := 0, int64(0)
		for i := range c.JobsPerNode {
			sum += c.JobsPerNode[i]
			coldSum += c.ColdLoadsPerNode[i]
			if c.JobsPerNode[i] == 0 {
				t.Errorf("%s: node %d got no job (%v)", routing, i, c.JobsPerNode)
			}
		}
		if sum != len(reqs) || coldSum != rep.ColdLoads {
			t.Errorf("%s: jobs per node sum to %d (want %d), cold loads to %d (want %d)", routing, sum, len(reqs), coldSum, rep.ColdLoads)
		}
		if want := routing + "@"; len(c.Routing) < len(want) || c.Routing[:len(want)] != want {
			t.Errorf("routing policy reported as %q, want %s…", c.Routing, want)
		}
		// Every job crossed the network once: no latency below the hop.
		if rep.P50LatencyS < cfg.NetworkDelay.Seconds() {
			t.Errorf("%s: p50 %v s below the %v network delay", routing, rep.P50LatencyS, cfg.NetworkDelay)
		}
		if again := runCluster(t, cfg, models, reqs, 5); reportJSON(t, again) != reportJSON(t, rep) {
			t.Errorf("%s: the same seed gave another report", routing)
		}
		cold[routing] = rep.ColdLoads
		t.Logf("%s: cold loads %d, p95 %.1f s, jobs per node %v", routing, rep.ColdLoads, rep.P95LatencyS, c.JobsPerNode)
	}
	if cold["affinity"] >= cold["random"] || cold["affinity"] >= cold["least-loaded"] {
		t.Errorf("cold loads %v: want affinity below random and least-loaded", cold)
	}
	// random draws from the seeded words: another seed, another spread.
	cfg := ClusterConfig{Node: clusterNode("random"), Nodes: nodes}
	a, b := runCluster(t, cfg, models, reqs, 5), runCluster(t, cfg, models, reqs, 6)
	if fmt.Sprint(a.Cluster.JobsPerNode) == fmt.Sprint(b.Cluster.JobsPerNode) {
		t.Errorf("random routing spread jobs the same way under seeds 5 and 6: %v", a.Cluster.JobsPerNode)
	}
}

// TestClusterRefusesWhatNoNodeHolds: a job too large for every node is
// counted unrouted and failed, and the other jobs still run.
func TestClusterRefusesWhatNoNodeHolds(t *testing.T) {
	models := []Model{{ID: "huge", Bytes: 60e9, Family: "flux"}, {ID: "small", Bytes: 2e9, Family: "sd15"}}
	reqs := []Request{{Time: 0, Models: []string{"huge"}}, {Time: time.Second, Models: []string{"small"}}}
	rep := runCluster(t, ClusterConfig{Node: clusterNode("affinity"), Nodes: 2}, models, reqs, 1)
	if rep.Cluster.Unrouted != 1 || rep.Completed != 1 || rep.Failed != 1 {
		t.Errorf("unrouted %d, completed %d, failed %d; want 1, 1, 1", rep.Cluster.Unrouted, rep.Completed, rep.Failed)
	}
}
