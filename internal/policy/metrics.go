package policy

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// faultReasons are FaultError kinds in the order of version.faultsBy.
var faultReasons = [...]string{FaultTrap, FaultTimeout, FaultInvalid, FaultStatus, FaultStall}

func faultIndex(err error) int {
	var fe *FaultError
	if errors.As(err, &fe) {
		for i, r := range faultReasons {
			if fe.Kind == r {
				return i
			}
		}
	}
	return 0
}

var (
	descDecisions = prometheus.NewDesc("kiln_policy_decisions_total",
		"Decisions asked of a policy version (a fault included).", []string{"kind", "policy", "version", "source"}, nil)
	descFaults = prometheus.NewDesc("kiln_policy_faults_total",
		"Decisions of a policy version that failed and were answered by the native fallback, by reason (trap, timeout, invalid, error_status, stall).",
		[]string{"kind", "policy", "version", "reason"}, nil)
	descRollbacks = prometheus.NewDesc("kiln_policy_rollbacks_total",
		"Returns of a kind to its previous policy, asked for (manual) or after repeated faults (auto).", []string{"kind", "trigger"}, nil)
	descSwaps = prometheus.NewDesc("kiln_policy_swaps_total",
		"Changes of a kind's active policy, rollbacks included.", []string{"kind"}, nil)
	descActive = prometheus.NewDesc("kiln_policy_active_info",
		"The active policy of each kind (value 1).", []string{"kind", "policy", "version", "source", "sha256"}, nil)
	descInstances = prometheus.NewDesc("kiln_policy_instances",
		"WASM instances alive for a policy version, pooled or in use.", []string{"kind", "policy", "version"}, nil)
)

// latencyBuckets span 1 µs (a native decision) to 100 ms (past any
// deadline worth having).
var latencyBuckets = prometheus.ExponentialBuckets(1e-6, 2.5, 14)

// decisionLatency is kiln_policy_decision_seconds, one histogram per kind
// resolved up front so that a decision pays one atomic add for it.
type decisionLatency struct {
	vec   *prometheus.HistogramVec
	kinds [abi.KindRouting + 1]prometheus.Observer
}

func newDecisionLatency() *decisionLatency {
	d := &decisionLatency{vec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kiln_policy_decision_seconds",
		Help:    "Time to ask a policy for a decision: snapshot, call, answer and validation.",
		Buckets: latencyBuckets,
	}, []string{"kind"})}
	for _, k := range abi.Kinds {
		d.kinds[k] = d.vec.WithLabelValues(k.String())
	}
	return d
}

func (d *decisionLatency) observe(k abi.Kind, took time.Duration) {
	if d == nil || int(k) >= len(d.kinds) || d.kinds[k] == nil {
		return
	}
	d.kinds[k].Observe(took.Seconds())
}

// Collector returns the Prometheus collector of the policy metrics:
// decisions, faults by reason, rollbacks and swaps, the active version of
// each kind, live instances and the decision latency histogram. Register
// it once, on the registry that /metrics serves.
func (h *Host) Collector() prometheus.Collector { return hostCollector{h} }

type hostCollector struct{ h *Host }

func (c hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDecisions, descFaults, descRollbacks, descSwaps, descActive, descInstances} {
		ch <- d
	}
	c.h.latency.vec.Describe(ch)
}

func (c hostCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.h
	h.mu.Lock()
	for _, k := range abi.Kinds {
		s := h.slots[k]
		kind := k.String()
		act := s.active.Load()
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, 1, kind, act.name, strconv.Itoa(act.number), act.source, act.sha)
		ch <- prometheus.MustNewConstMetric(descRollbacks, prometheus.CounterValue, float64(s.rollbacks.Load()), kind, "manual")
		ch <- prometheus.MustNewConstMetric(descRollbacks, prometheus.CounterValue, float64(s.autoRollbacks.Load()), kind, "auto")
		ch <- prometheus.MustNewConstMetric(descSwaps, prometheus.CounterValue, float64(s.swaps.Load()), kind)
		for _, v := range s.versions {
			num := strconv.Itoa(v.number)
			ch <- prometheus.MustNewConstMetric(descDecisions, prometheus.CounterValue, float64(v.calls.Load()), kind, v.name, num, v.source)
			for i, r := range faultReasons {
				ch <- prometheus.MustNewConstMetric(descFaults, prometheus.CounterValue, float64(v.faultsBy[i].Load()), kind, v.name, num, r)
			}
			if v.mod != nil {
				ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(v.mod.live.Load()), kind, v.name, num)
			}
		}
	}
	h.mu.Unlock()
	h.latency.vec.Collect(ch)
}

// slotCounters count a slot's swaps for the metrics.
type slotCounters struct {
	swaps, rollbacks, autoRollbacks atomic.Int64
}
