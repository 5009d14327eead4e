package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClusterAuditRequeuesLive: a queued job whose work message is gone
// (its publish failed, or a node dropped the message before the record was
// stored) waits for good unless the queue audit finds it. Two kiln nodes
// as processes, the audit sped up by its test hook (KILNTEST_AUDIT_EVERY,
// environment only, warned about at start): a record written straight into
// the registry as queued, with no message, is queued again by the live
// node with the smallest id, runs, and ends done, once; that node's
// kiln_cluster_jobs_requeued_total{reason="no_message"} counts it.
func TestClusterAuditRequeuesLive(t *testing.T) {
	url := startNATSAlone(t)
	t.Setenv("KILNTEST_AUDIT_EVERY", "1s")
	nodes := startTwoNodes(t, url, "cost.time_scale=0.05", "workers.per_device=1")
	t.Setenv("KILNTEST_AUDIT_EVERY", "")
	for _, k := range nodes {
		if !strings.Contains(k.log.String(), "KILNTEST_AUDIT_EVERY=1s") {
			t.Fatalf("%s does not warn about the audit's test hook", k.base)
		}
	}

	// A job run the normal way gives a record as kiln writes one; the
	// orphan is a copy of it under a new id, queued, never published.
	done := nodes[0].submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 2, 900), "batch")
	waitFor(t, 30*time.Second, "the template job to finish", func() bool { return nodes[0].clusterJob(done).State == "done" })
	_, js := connectJetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "KILN_jobs")
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(ctx, done)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	orphan := fmt.Sprintf("orphan-%d", time.Now().UnixNano())
	rec["id"], rec["state"], rec["token"] = orphan, "queued", "lost-publish"
	rec["created_at"] = time.Now().UTC().Format(time.RFC3339Nano)
	for _, k := range []string{"node", "target", "started_at", "finished_at", "outputs", "worker", "attempts", "direct", "seq", "rescue", "error"} {
		delete(rec, k)
	}
	data, _ := json.Marshal(rec)
	if _, err := kv.Create(ctx, orphan, data); err != nil {
		t.Fatal(err)
	}
	written := time.Now()

	waitFor(t, 30*time.Second, "the audit to queue the orphan again and a node to run it", func() bool {
		return nodes[1].clusterJob(orphan).State == "done"
	})
	j := nodes[0].clusterJob(orphan)
	t.Logf("a queued job without a work message: done on %s %s after its record was written (audit every 1 s, records older than 1 s)",
		j.Node, time.Since(written).Round(time.Millisecond))
	if j.Attempts != 1 {
		t.Errorf("the orphan ran with %d attempts; want 1", j.Attempts)
	}
	requeued := regexp.MustCompile(`(?m)^kiln_cluster_jobs_requeued_total\{reason="no_message"\} (\S+)$`)
	var total float64
	for _, k := range nodes {
		_, metrics := k.do("GET", "/metrics", nil)
		if m := requeued.FindSubmatch(metrics); m != nil {
			v, _ := strconv.ParseFloat(string(m[1]), 64)
			total += v
		}
	}
	if total != 1 {
		t.Errorf("kiln_cluster_jobs_requeued_total{reason=\"no_message\"} over both nodes = %v; want 1", total)
	}
}
