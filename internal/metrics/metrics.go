// Package metrics exposes kiln's Prometheus metrics.
//
// Every name starts with kiln_. Gauges that mirror state owned elsewhere
// (queue depth, jobs by state, ready workers, VRAM) are read from their
// owners at scrape time through Sources, so they can never drift; events
// (latency, loads, evictions, submissions) are counted as they happen.
//
//	m := metrics.New(metrics.Sources{QueueDepth: store.Depth, ...})
//	reg := m.Registry() // internal/api serves it at GET /metrics
//	m.JobFinished("interactive", "done", 1.7)
package metrics

import (
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	// WorkersReady returns the number of workers that are up.
	WorkersReady func() int
	// QueueCommits returns the queue's durable commits so far: all of
	// them, those that carried submissions, and the jobs they carried
	// (kiln_queue_commits_total{kind}; the jobs are
	// kiln_jobs_submitted_total's).
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
	httpCount   *prometheus.CounterVec
	httpSeconds *prometheus.HistogramVec
	cacheLooks  *prometheus.CounterVec
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
	m.httpCount = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_http_requests_total",
		Help: "HTTP requests answered, by route (the pattern that served it; \"unmatched\" for a 404 or 405 of no route), method and status code.",
	}, []string{"route", "method", "code"})
	m.httpSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kiln_http_request_duration_seconds",
		Help:    "Time to answer an HTTP request, by route and method (streams — /ws, /v1/dashboard/events — are counted, not timed).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
	}, []string{"route", "method"})
	m.cacheLooks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_result_cache_lookups_total",
		Help: "Prompts looked up in the ComfyUI result cache, by result: hit (answered from a finished run), miss, or stale (matched, but too old or its files gone).",
	}, []string{"result"})
	for _, r := range []string{"hit", "miss", "stale"} {
		m.cacheLooks.WithLabelValues(r)
	}
	m.reg.MustRegister(m.jobLatency, m.jobsDone, m.submitted, m.rejected, m.loads, m.loadSeconds, m.evictions, m.preemptions,
		m.httpCount, m.httpSeconds, m.cacheLooks, buildInfo(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{src: src})
	return m
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

// HTTPRequest observes one answered request: route is the pattern that
// served it ("GET /v1/jobs/{id}": bounded, unlike the paths), or
// "unmatched". A negative seconds counts the request without timing it (a
// stream).
func (m *Metrics) HTTPRequest(route, method string, code int, seconds float64) {
	m.httpCount.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	if seconds >= 0 {
		m.httpSeconds.WithLabelValues(route, method).Observe(seconds)
	}
}

// ResultCacheLookup counts a result cache lookup: "hit", "miss" or "stale".
func (m *Metrics) ResultCacheLookup(result string) { m.cacheLooks.WithLabelValues(result).Inc() }

// buildInfo is kiln_build_info: 1, labelled with the version, the VCS
// revision and the Go version, for joining onto other series and for
// seeing a fleet's versions at a glance.
func buildInfo() prometheus.Collector {
	revision := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "kiln_build_info",
		Help:        "Always 1; the labels say which kiln this is.",
		ConstLabels: prometheus.Labels{"version": Version, "revision": revision, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// JobPreempted counts a preemption of a job of class.
func (m *Metrics) JobPreempted(class string) { m.preemptions.WithLabelValues(class).Inc() }

var (
	descQueueDepth = prometheus.NewDesc("kiln_queue_depth", "Queued jobs waiting for a worker, by class.", []string{"class"}, nil)
	descJobs       = prometheus.NewDesc("kiln_jobs", "Jobs in the store, by state.", []string{"state"}, nil)
	descReady      = prometheus.NewDesc("kiln_workers_ready", "Worker processes that are up (idle or busy).", nil, nil)
	// One counter for the queue's durable commits: kind="submit" carried at
	// least one new job (group commit shares one among many), "other"
	// only state changes. The jobs committed are kiln_jobs_submitted_total.
	descCommits = prometheus.NewDesc("kiln_queue_commits_total", "Durable (fsynced) commits of the job queue, by kind: submit (carried new jobs) or other (state changes only).", []string{"kind"}, nil)
)

// stateCollector reads owned state at scrape time.
type stateCollector struct{ src Sources }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descQueueDepth
	ch <- descJobs
	ch <- descReady
	ch <- descCommits
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
	if f := c.src.WorkersReady; f != nil {
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, float64(f()))
	}
	if f := c.src.QueueCommits; f != nil {
		commits, sub, _ := f()
		ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(sub), "submit")
		ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(commits-min(sub, commits)), "other")
	}
}
