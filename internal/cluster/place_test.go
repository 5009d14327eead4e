package cluster

import (
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
)

func TestConsumerNodeRoundTrip(t *testing.T) {
	for _, node := range []string{"node1", "gpu-box-7", "a_b-interactive"} {
		for _, class := range []job.Class{job.Interactive, job.Batch} {
			n, c, ok := consumerNode(nodeConsumer(node, class))
			if !ok || n != node || c != class {
				t.Errorf("consumerNode(nodeConsumer(%q, %s)) = %q, %s, %v", node, class, n, c, ok)
			}
		}
	}
	for _, name := range []string{"kiln-interactive", "kiln-batch", "kiln-node--batch", "other"} {
		if _, _, ok := consumerNode(name); ok {
			t.Errorf("consumerNode(%q) claims a node's consumer", name)
		}
	}
}

func TestNodeViewCountsWhatWasRoutedSinceTheHeartbeat(t *testing.T) {
	base := NodeInfo{ID: "n", Healthy: true, NodeState: NodeState{Workers: 2}}
	for _, tc := range []struct {
		name      string
		idle      int
		wait      time.Duration
		waiting   int           // routed to it, still in its consumers
		work      time.Duration // their work
		since     routed
		wantWait  time.Duration
		wantQueue int
	}{
		{name: "idle, nothing routed", idle: 2},
		{name: "its own wait", wait: 3 * time.Second, wantWait: 3 * time.Second},
		{name: "two routed to a busy node", wait: time.Second, since: routed{jobs: 2, work: 4 * time.Second},
			wantWait: 3 * time.Second, wantQueue: 2},
		{name: "one routed to an idle worker waits for nothing", idle: 1, since: routed{jobs: 1, work: 2 * time.Second},
			wantQueue: 1},
		{name: "three routed, two idle workers take two", idle: 2, since: routed{jobs: 3, work: 6 * time.Second},
			wantWait: time.Second, wantQueue: 3},
		{name: "jobs waiting in its consumers", wait: time.Second, waiting: 4, work: 8 * time.Second,
			wantWait: 5 * time.Second, wantQueue: 4},
		{name: "waiting in its consumers and routed since", wait: time.Second, waiting: 4, work: 8 * time.Second,
			since: routed{jobs: 1, work: 2 * time.Second}, wantWait: 6 * time.Second, wantQueue: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := base
			n.IdleWorkers, n.Wait, n.Routed, n.RoutedWork = tc.idle, tc.wait, tc.waiting, tc.work
			v := nodeView(n, tc.since)
			if v.EstimatedWait != tc.wantWait || v.Queued != tc.wantQueue || !v.Healthy || v.ID != "n" {
				t.Fatalf("nodeView = wait %s queued %d; want wait %s queued %d", v.EstimatedWait, v.Queued, tc.wantWait, tc.wantQueue)
			}
		})
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, id := range []string{"01a2503307ba9871e18a3e378c2aaff9", "prompt-3", "a.b:c", "idem-x"} {
		if got := idFromKey(key(id)); got != id {
			t.Errorf("idFromKey(key(%q)) = %q", id, got)
		}
	}
}
