package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLint runs the same checks as `promtool check metrics` over
// everything kiln exports, and checks that the state gauges read their
// sources.
func TestMetricsLint(t *testing.T) {
	m := New(Sources{
		QueueDepth:   func() map[string]int { return map[string]int{"interactive": 2, "batch": 5} },
		JobsByState:  func() map[string]int { return map[string]int{"queued": 7, "done": 3} },
		WorkersReady: func() int { return 2 },
		QueueCommits: func() (uint64, uint64, uint64) { return 10, 8, 80 },
	})
	m.JobSubmitted("batch")
	m.JobRejected("queue_full")
	m.JobFinished("batch", "done", 1.5)
	m.ModelLoaded(0.3)
	m.ModelEvicted()
	m.JobPreempted("batch")
	m.HTTPRequest("GET /v1/jobs/{id}", "GET", 200, 0.002)
	m.HTTPRequest("unmatched", "GET", 404, 0.0001)
	m.ResultCacheLookup("hit")
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	for name, want := range map[string]int{
		"kiln_queue_depth": 2, "kiln_jobs": 2, "kiln_worker_restarts_total": 0, "kiln_vram_reserved_bytes": 0,
		"kiln_queue_commits_total": 2, "kiln_queue_jobs_committed_total": 0, "kiln_queue_submit_commits_total": 0,
		"kiln_job_latency_seconds": 1, "kiln_jobs_submitted_total": 1, "kiln_preemptions_total": 1, "kiln_build_info": 1,
		"kiln_http_requests_total": 2, "kiln_http_request_duration_seconds": 2, "kiln_result_cache_lookups_total": 3,
	} {
		if got, err := testutil.GatherAndCount(m.Registry(), name); err != nil || got != want {
			t.Errorf("%s: %d series, want %d (%v)", name, got, want, err)
		}
	}
	if n := testutil.CollectAndCount(m.jobLatency); n != 1 {
		t.Errorf("latency histogram series %d", n)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`# HELP kiln_workers_ready Worker processes that are up (idle or busy).
# TYPE kiln_workers_ready gauge
kiln_workers_ready 2
`), "kiln_workers_ready"); err != nil {
		t.Error(err)
	}
	// 10 commits, 8 of them with new jobs: 8 submit, 2 other.
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`# HELP kiln_queue_commits_total Durable (fsynced) commits of the job queue, by kind: submit (carried new jobs) or other (state changes only).
# TYPE kiln_queue_commits_total counter
kiln_queue_commits_total{kind="other"} 2
kiln_queue_commits_total{kind="submit"} 8
`), "kiln_queue_commits_total"); err != nil {
		t.Error(err)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`# HELP kiln_result_cache_lookups_total Prompts looked up in the ComfyUI result cache, by result: hit (answered from a finished run), miss, or stale (matched, but too old or its files gone).
# TYPE kiln_result_cache_lookups_total counter
kiln_result_cache_lookups_total{result="hit"} 1
kiln_result_cache_lookups_total{result="miss"} 0
kiln_result_cache_lookups_total{result="stale"} 0
`), "kiln_result_cache_lookups_total"); err != nil {
		t.Error(err)
	}
}
