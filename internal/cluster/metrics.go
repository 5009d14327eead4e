package cluster

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// The sweeps that keep a job from waiting for good act rarely, and each
// act means something went wrong elsewhere (a node died, an answer was
// lost, a publish failed): an operator wants to see them, not grep for
// them.

// Reasons a job was queued again, the label of kiln_cluster_jobs_requeued_total.
const (
	// requeueRescue: a job claimed at submit by a node that went silent
	// (rescue.go).
	requeueRescue = "rescue"
	// requeueNoMessage: a queued job that had no work message (audit.go).
	requeueNoMessage = "no_message"
	// requeueResubmit: a client's retry of a queued job (requeue).
	requeueResubmit = "resubmit"
)

var descRequeued = prometheus.NewDesc("kiln_cluster_jobs_requeued_total",
	"Jobs this node queued again in the cluster, by reason: rescue (claimed at submit by a node that went silent), no_message (a queued job the queue audit found without a work message), resubmit (a client's retry of a queued job).",
	[]string{"reason"}, nil)

// requeueCounts are this node's counts of kiln_cluster_jobs_requeued_total.
type requeueCounts struct {
	rescue, noMessage, resubmit atomic.Int64
}

// clusterCollector exposes a Cluster's counters to Prometheus.
type clusterCollector struct{ c *Cluster }

// Collector returns the cluster's Prometheus collector.
func (c *Cluster) Collector() prometheus.Collector { return clusterCollector{c} }

func (clusterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descRequeued }

func (cc clusterCollector) Collect(ch chan<- prometheus.Metric) {
	r := &cc.c.requeued
	for _, m := range []struct {
		reason string
		n      int64
	}{{requeueRescue, r.rescue.Load()}, {requeueNoMessage, r.noMessage.Load()}, {requeueResubmit, r.resubmit.Load()}} {
		ch <- prometheus.MustNewConstMetric(descRequeued, prometheus.CounterValue, float64(m.n), m.reason)
	}
}
