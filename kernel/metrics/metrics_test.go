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
		QueueDepth:     func() map[string]int { return map[string]int{"interactive": 2, "batch": 5} },
		JobsByState:    func() map[string]int { return map[string]int{"queued": 7, "done": 3} },
		WorkerRestarts: func() int { return 4 },
		WorkersReady:   func() int { return 2 },
		VRAMReserved:   func() map[string]uint64 { return map[string]uint64{"sim-gpu-0": 1 << 30} },
		QueueCommits:   func() (uint64, uint64, uint64) { return 10, 8, 80 },
	})
	m.JobSubmitted("batch")
	m.JobRejected("queue_full")
	m.JobFinished("batch", "done", 1.5)
	m.ModelLoaded(0.3)
	m.ModelEvicted()
	m.JobPreempted("batch")
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	for name, want := range map[string]int{
		"kiln_queue_depth": 2, "kiln_jobs": 2, "kiln_worker_restarts_total": 1, "kiln_vram_reserved_bytes": 1,
		"kiln_queue_jobs_committed_total": 1, "kiln_job_latency_seconds": 1, "kiln_jobs_submitted_total": 1,
		"kiln_preemptions_total": 1,
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
}
