// Package metrics exposes kiln's Prometheus metrics.
//
// Every name starts with kiln_. Gauges that mirror state owned elsewhere
// (queue depth, jobs by state, ready workers, VRAM) are read from their
// owners at scrape time through Sources, so they can never drift; events
// (latency, loads, evictions, submissions) are counted as they happen.
//
//	m := metrics.New(metrics.Sources{QueueDepth: store.Depth, ...})
//	http.Handle("/metrics", m.Handler())
//	m.JobFinished("interactive", "done", 1.7)
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Version is kiln's version, for kiln_build_info and the dashboard's
// header. cmd/kiln sets it from its build (the Makefile's -ldflags, else the
// module's build information) before it assembles a node.
var Version = "dev"

// Sources read state at scrape time. Nil fields are skipped.
type Sources struct {
	// QueueDepth returns queued jobs per class.
	QueueDepth func() map[string]int
	// JobsByState returns the number of jobs in each state.
	JobsByState func() map[string]int
	// WorkerRestarts returns the total process restarts so far.
	WorkerRestarts func() int
	// WorkersReady returns the number of workers that are up.
	WorkersReady func() int
	// VRAMReserved returns reserved bytes per device name.
	VRAMReserved func() map[string]uint64
	// QueueCommits returns the queue's durable commits so far: all of
	// them, those that carried submissions, and the jobs they carried.
	QueueCommits func() (commits, submitCommits, jobs uint64)
}

// Metrics holds kiln's collectors and their registry.
type Metrics struct {
	reg *prometheus.Registry

	jobLatency  *prometheus.HistogramVec
	jobsDone    *prometheus.CounterVec
	submitted   *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	loads       prometheus.Counter
	loadSeconds prometheus.Histogram
	evictions   prometheus.Counter
	preemptions *prometheus.CounterVec
}

// New registers every collector on a fresh registry.
func New(src Sources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.jobLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kiln_job_latency_seconds",
		Help:    "Time from submission to a terminal state, by class.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
	}, []string{"class"})
	m.jobsDone = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_jobs_finished_total",
		Help: "Jobs that reached a terminal state, by class and state.",
	}, []string{"class", "state"})
	m.submitted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_jobs_submitted_total",
		Help: "Jobs accepted into the durable queue, by class.",
	}, []string{"class"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_jobs_rejected_total",
		Help: "Submissions refused, by reason.",
	}, []string{"reason"})
	m.loads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kiln_model_loads_total",
		Help: "Models made resident in a worker.",
	})
	m.loadSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kiln_model_load_seconds",
		Help:    "Time to make a model resident in a worker.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	m.evictions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kiln_model_evictions_total",
		Help: "Models unloaded from a worker to make room.",
	})
	m.preemptions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_preemptions_total",
		Help: "Running jobs stopped and queued again for a job of a higher class, by the preempted job's class.",
	}, []string{"class"})
	m.reg.MustRegister(m.jobLatency, m.jobsDone, m.submitted, m.rejected, m.loads, m.loadSeconds, m.evictions, m.preemptions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{src: src})
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Register adds another component's collector (the tiers', say) to the
// same registry, so that /metrics serves them all.
func (m *Metrics) Register(c prometheus.Collector) { m.reg.MustRegister(c) }

// Registry is the registry the metrics live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// JobSubmitted counts an accepted job.
func (m *Metrics) JobSubmitted(class string) { m.submitted.WithLabelValues(class).Inc() }

// JobRejected counts a refused submission.
func (m *Metrics) JobRejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// JobFinished observes a job that reached a terminal state.
func (m *Metrics) JobFinished(class, state string, latencySeconds float64) {
	m.jobsDone.WithLabelValues(class, state).Inc()
	m.jobLatency.WithLabelValues(class).Observe(latencySeconds)
}

// ModelLoaded observes a model load.
func (m *Metrics) ModelLoaded(seconds float64) {
	m.loads.Inc()
	m.loadSeconds.Observe(seconds)
}

// ModelEvicted counts an eviction.
func (m *Metrics) ModelEvicted() { m.evictions.Inc() }

// JobPreempted counts a preemption of a job of class.
func (m *Metrics) JobPreempted(class string) { m.preemptions.WithLabelValues(class).Inc() }

var (
	descQueueDepth = prometheus.NewDesc("kiln_queue_depth", "Queued jobs waiting for a worker, by class.", []string{"class"}, nil)
	descJobs       = prometheus.NewDesc("kiln_jobs", "Jobs in the store, by state.", []string{"state"}, nil)
	descRestarts   = prometheus.NewDesc("kiln_worker_restarts_total", "Worker process restarts after a crash or a failed health check.", nil, nil)
	descReady      = prometheus.NewDesc("kiln_workers_ready", "Worker processes that are up (idle or busy).", nil, nil)
	descVRAM       = prometheus.NewDesc("kiln_vram_reserved_bytes", "VRAM reserved in the ledger, by device.", []string{"device"}, nil)
	descCommits    = prometheus.NewDesc("kiln_queue_commits_total", "Durable (fsynced) commits of the job queue.", nil, nil)
	descSubCommits = prometheus.NewDesc("kiln_queue_submit_commits_total", "Durable commits that carried at least one new job (group commit shares one among many).", nil, nil)
	descCommitted  = prometheus.NewDesc("kiln_queue_jobs_committed_total", "Jobs made durable by submission.", nil, nil)
)

// stateCollector reads owned state at scrape time.
type stateCollector struct{ src Sources }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descQueueDepth
	ch <- descJobs
	ch <- descRestarts
	ch <- descReady
	ch <- descVRAM
	ch <- descCommits
	ch <- descSubCommits
	ch <- descCommitted
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if f := c.src.QueueDepth; f != nil {
		for class, n := range f() {
			ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(n), class)
		}
	}
	if f := c.src.JobsByState; f != nil {
		for state, n := range f() {
			ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), state)
		}
	}
	if f := c.src.WorkerRestarts; f != nil {
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(f()))
	}
	if f := c.src.WorkersReady; f != nil {
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, float64(f()))
	}
	if f := c.src.QueueCommits; f != nil {
		commits, sub, jobs := f()
		ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(commits))
		ch <- prometheus.MustNewConstMetric(descSubCommits, prometheus.CounterValue, float64(sub))
		ch <- prometheus.MustNewConstMetric(descCommitted, prometheus.CounterValue, float64(jobs))
	}
	if f := c.src.VRAMReserved; f != nil {
		for dev, n := range f() {
			ch <- prometheus.MustNewConstMetric(descVRAM, prometheus.GaugeValue, float64(n), dev)
		}
	}
}
