package experiment

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// hist is a Prometheus-style histogram kept as it fills.
type hist struct {
	counts []uint64 // per bucket of LatencyBuckets, not cumulative
	sum    float64
	n      uint64
}

func (h *hist) observe(x float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(LatencyBuckets))
	}
	for i, b := range LatencyBuckets {
		if x <= b {
			h.counts[i]++
			break
		}
	}
	h.sum += x
	h.n++
}

func (h *hist) metric(d *prometheus.Desc, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(LatencyBuckets))
	var cum uint64
	for i, b := range LatencyBuckets {
		if h.counts != nil {
			cum += h.counts[i]
		}
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.n, h.sum, buckets, labels...)
}

var (
	// policy and version as the policy host labels its own series
	// (kiln_policy_*), so that an arm joins them.
	expLabels   = []string{"experiment", "arm", "policy", "version"}
	descRunning = prometheus.NewDesc("kiln_experiment_running", "1 while an experiment splits this node's decisions.", nil, nil)
	descJobs    = prometheus.NewDesc("kiln_experiment_jobs_total", "Finished jobs counted for an experiment's arm.", expLabels, nil)
	descFailed  = prometheus.NewDesc("kiln_experiment_failed_jobs_total", "Failed jobs counted for an experiment's arm.", expLabels, nil)
	descMissed  = prometheus.NewDesc("kiln_experiment_deadline_misses_total", "Jobs of an experiment's arm that finished after their deadline.", expLabels, nil)
	descLatency = prometheus.NewDesc("kiln_experiment_latency_seconds", "Submission-to-finish latency of an experiment arm's jobs.", expLabels, nil)
	descWait    = prometheus.NewDesc("kiln_experiment_queue_wait_seconds", "Queue wait of an experiment arm's jobs.", expLabels, nil)
	descLoad    = prometheus.NewDesc("kiln_experiment_load_seconds", "Model load time of an experiment arm's jobs.", expLabels, nil)
	descHits    = prometheus.NewDesc("kiln_experiment_vram_hits_total", "Models already resident on the worker an arm placed a job on.", expLabels, nil)
	descMisses  = prometheus.NewDesc("kiln_experiment_vram_misses_total", "Models an arm's placements had to load.", expLabels, nil)
	descBytes   = prometheus.NewDesc("kiln_experiment_moved_bytes_total", "Model bytes an arm's placements had to load into VRAM.", expLabels, nil)
	descFaults  = prometheus.NewDesc("kiln_experiment_faults_total", "Failed decisions of an arm's policy version during the experiment.", expLabels, nil)
	descBusy    = prometheus.NewDesc("kiln_experiment_gpu_busy_seconds_total", "GPU time spent running an arm's jobs.", expLabels, nil)
)

// Describe implements prometheus.Collector.
func (c *Controller) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunning, descJobs, descFailed, descMissed, descLatency, descWait, descLoad,
		descHits, descMisses, descBytes, descFaults, descBusy} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the running experiment's arms,
// or the last one's once it ended, over the whole experiment.
func (c *Controller) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	running := 0.0
	a := c.run
	if a != nil {
		running = 1
	} else {
		a = c.last
	}
	ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, running)
	if a == nil {
		return
	}
	tier := a.tierNow()
	for arm := range 2 {
		t := a.total[arm]
		if t == nil {
			continue
		}
		l := []string{a.rec.ID, armNames[arm], a.arms[arm].Name(), strconv.Itoa(a.arms[arm].Number())}
		tc := a.tierDone[arm]
		tc.hits += tier[arm].hits
		tc.misses += tier[arm].misses
		tc.bytes += tier[arm].bytes
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.CounterValue, float64(t.n), l...)
		ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(t.failed), l...)
		ch <- prometheus.MustNewConstMetric(descMissed, prometheus.CounterValue, float64(t.missed), l...)
		ch <- t.latH.metric(descLatency, l...)
		ch <- t.waitH.metric(descWait, l...)
		ch <- t.loadH.metric(descLoad, l...)
		ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(tc.hits), l...)
		ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(tc.misses), l...)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(tc.bytes), l...)
		ch <- prometheus.MustNewConstMetric(descFaults, prometheus.CounterValue, float64(max(a.arms[arm].Faults()-a.faults0[arm], 0)), l...)
		ch <- prometheus.MustNewConstMetric(descBusy, prometheus.CounterValue, t.busy, l...)
	}
}

var _ prometheus.Collector = (*Controller)(nil)
