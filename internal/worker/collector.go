package worker

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports each worker, labelled worker (its id) and device (its
// GPU's index, as every kiln_device_ series), read at scrape time:
//
//	kiln_worker_restarts_total{worker,device}  process restarts after a crash or a failed health check
//	kiln_worker_jobs_total{worker,device}      jobs the worker finished
//	kiln_worker_state{worker,device,state}     1 for the worker's state now, 0 for the others
//
// Per worker, so that a crash loop names the worker it is in.
func (p *Pool) Collector() prometheus.Collector { return poolCollector{p} }

var (
	descRestarts = prometheus.NewDesc("kiln_worker_restarts_total", "Worker process restarts after a crash or a failed health check.", []string{"worker", "device"}, nil)
	descJobs     = prometheus.NewDesc("kiln_worker_jobs_total", "Jobs a worker finished.", []string{"worker", "device"}, nil)
	descState    = prometheus.NewDesc("kiln_worker_state", "1 for a worker's current state (starting, ready, busy, stopping, backoff, stopped, recycling), 0 for the others.", []string{"worker", "device", "state"}, nil)
)

// workerStates are the states kiln_worker_state exports, each worker
// having all of them (0 or 1), so that a change of state is a change of
// value rather than a series that appears.
var workerStates = []State{Starting, Ready, Busy, Stopping, Backoff, Stopped, Recycling}

type poolCollector struct{ p *Pool }

func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRestarts
	ch <- descJobs
	ch <- descState
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, in := range c.p.Infos() {
		dev := strconv.Itoa(in.Device)
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(in.Restarts), in.ID, dev)
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.CounterValue, float64(in.JobsDone), in.ID, dev)
		for _, st := range workerStates {
			v := 0.0
			if in.State == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, in.ID, dev, string(st))
		}
	}
}
