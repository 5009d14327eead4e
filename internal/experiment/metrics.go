package experiment

import (
	"math"
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/internal/stats"
)

// Observation is one finished job, as the controller counts it.
type Observation struct {
	JobID  string
	Worker string
	// Failed is true for a job that failed (cancelled jobs are not
	// observed: a client's choice says nothing of a policy).
	Failed bool
	// Latency is submission to finish; QueueWait submission to start;
	// Load start to running (models made resident); Run the graph's time.
	Latency, QueueWait, Load, Run time.Duration
	// HasDeadline and MissedDeadline describe the job's SLO.
	HasDeadline, MissedDeadline bool
	// Interactive is the job's class: interactive latency gates on its
	// own (a scheduler can starve the class without moving the mean).
	Interactive bool
}

// maxSamples bounds the latencies kept per arm and step; past it the arm's
// summary still counts every job, and the tests use the first maxSamples.
const maxSamples = 200_000

// armAcc accumulates one arm's observations.
type armAcc struct {
	n, failed               int
	withDeadline, missed    int
	latency, wait, load     []float64 // seconds, finished jobs
	busy                    float64   // seconds of graph execution
	hits, misses, bytes     int64
	faults                  int64
	discarded               int
	windows                 map[int][]float64 // switchback: latencies per window
	latH, waitH, loadH      hist
	latSeq, errSeq, missSeq *stats.Sequential
}

func newArmAcc() *armAcc { return &armAcc{windows: map[int][]float64{}} }

func (a *armAcc) add(o Observation, window int) {
	a.n++
	if o.Failed {
		a.failed++
	}
	if o.HasDeadline {
		a.withDeadline++
		if o.MissedDeadline {
			a.missed++
		}
	}
	a.busy += o.Run.Seconds()
	if o.Failed {
		return
	}
	a.latH.observe(o.Latency.Seconds())
	a.waitH.observe(o.QueueWait.Seconds())
	a.loadH.observe(o.Load.Seconds())
	if len(a.latency) < maxSamples {
		a.latency = append(a.latency, o.Latency.Seconds())
		a.wait = append(a.wait, o.QueueWait.Seconds())
		a.load = append(a.load, o.Load.Seconds())
	}
	if window >= 0 {
		a.windows[window] = append(a.windows[window], o.Latency.Seconds())
	}
}

// ArmReport summarises one arm.
type ArmReport struct {
	Arm    string `json:"arm"`
	Policy string `json:"policy"`
	// Workers is the arm's worker group (unit workers).
	Workers []string `json:"workers,omitempty"`
	// N counts the jobs that finished for the arm; Failed those that failed.
	N      int `json:"n"`
	Failed int `json:"failed"`
	// Discarded counts jobs not counted (a switchback's burn-in).
	Discarded        int     `json:"discarded,omitempty"`
	ErrorRate        float64 `json:"error_rate"`
	WithDeadline     int     `json:"with_deadline"`
	DeadlineMissRate float64 `json:"deadline_miss_rate"`
	// Latencies in seconds, of the jobs that succeeded.
	MeanS      float64 `json:"mean_s"`
	P50S       float64 `json:"p50_s"`
	P90S       float64 `json:"p90_s"`
	P95S       float64 `json:"p95_s"`
	P99S       float64 `json:"p99_s"`
	QueueP95S  float64 `json:"queue_wait_p95_s"`
	LoadMeanS  float64 `json:"load_mean_s"`
	LoadP95S   float64 `json:"load_p95_s"`
	VRAMHits   int64   `json:"vram_hits"`
	VRAMMisses int64   `json:"vram_misses"`
	HitRatio   float64 `json:"hit_ratio"`
	BytesMoved int64   `json:"bytes_moved"`
	Faults     int64   `json:"faults"`
	GPUBusyS   float64 `json:"gpu_busy_s"`
	// Histogram counts latencies at or below each bound of LatencyBuckets.
	Histogram []int64 `json:"latency_histogram,omitempty"`
}

// LatencyBuckets are the upper bounds, in seconds, of the reports' latency
// histograms (and of the Prometheus histogram).
var LatencyBuckets = []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600}

func (a *armAcc) report(arm int, ref string) ArmReport {
	r := ArmReport{Arm: armNames[arm], Policy: ref, N: a.n, Failed: a.failed, Discarded: a.discarded,
		WithDeadline: a.withDeadline, VRAMHits: a.hits, VRAMMisses: a.misses, BytesMoved: a.bytes,
		Faults: a.faults, GPUBusyS: a.busy}
	if a.n > 0 {
		r.ErrorRate = float64(a.failed) / float64(a.n)
	}
	if a.withDeadline > 0 {
		r.DeadlineMissRate = float64(a.missed) / float64(a.withDeadline)
	}
	if t := a.hits + a.misses; t > 0 {
		r.HitRatio = float64(a.hits) / float64(t)
	}
	if len(a.latency) > 0 {
		s := slices.Sorted(slices.Values(a.latency))
		r.MeanS = stats.Mean(s)
		r.P50S, r.P90S, r.P95S, r.P99S = stats.Quantile(s, 0.5), stats.Quantile(s, 0.9), stats.Quantile(s, 0.95), stats.Quantile(s, 0.99)
		r.QueueP95S = stats.Quantile(a.wait, 0.95)
		r.LoadMeanS, r.LoadP95S = stats.Mean(a.load), stats.Quantile(a.load, 0.95)
		r.Histogram = make([]int64, len(LatencyBuckets))
		for i, b := range LatencyBuckets {
			n, _ := slices.BinarySearch(s, math.Nextafter(b, math.Inf(1)))
			r.Histogram[i] = int64(n)
		}
	}
	return r
}

// metric reads a guard's metric from an arm's report; ok is false when
// the arm has no value for it yet.
func (r ArmReport) metric(name string) (float64, int, bool) {
	ok := len(r.Histogram) > 0
	switch name {
	case "p50":
		return r.P50S, r.N - r.Failed, ok
	case "p90":
		return r.P90S, r.N - r.Failed, ok
	case "p95":
		return r.P95S, r.N - r.Failed, ok
	case "p99":
		return r.P99S, r.N - r.Failed, ok
	case "mean":
		return r.MeanS, r.N - r.Failed, ok
	case "queue_p95":
		return r.QueueP95S, r.N - r.Failed, ok
	case "load_p95":
		return r.LoadP95S, r.N - r.Failed, ok
	case "error_rate":
		return r.ErrorRate, r.N, r.N > 0
	case "deadline_miss_rate":
		return r.DeadlineMissRate, r.WithDeadline, r.WithDeadline > 0
	case "faults":
		return float64(r.Faults), max(r.N, 1), true
	case "hit_ratio":
		t := r.VRAMHits + r.VRAMMisses
		return r.HitRatio, int(t), t > 0
	}
	return 0, 0, false
}
