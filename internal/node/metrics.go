package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-gpu/kiln/internal/experiment"
)

// experimentOutcomes exports kiln_experiments: how many experiments this
// node has on record in each state. internal/experiment's own collector
// exports the running experiment's arms; this one is for what they came
// to, so that an alert can fire when a canary is rolled back
// (deploy/prometheus/kiln-alerts.yml: delta(kiln_experiments{state=
// "rolled_back"}[…]) > 0).
type experimentOutcomes struct{ c *experiment.Controller }

var descExperiments = prometheus.NewDesc("kiln_experiments",
	"Experiments on record, by type (canary, ab, switchback), policy kind and state (running, promoted, rolled_back, completed, inconclusive, aborted).",
	[]string{"type", "kind", "state"}, nil)

func (experimentOutcomes) Describe(ch chan<- *prometheus.Desc) { ch <- descExperiments }

func (o experimentOutcomes) Collect(ch chan<- prometheus.Metric) {
	type key struct{ typ, kind, state string }
	counts := map[key]int{}
	// Every state of every kind seen appears, at zero too: a series that
	// is absent until the first rollback has no delta to alert on.
	for _, r := range o.c.List() {
		for _, st := range []experiment.State{experiment.Running, experiment.Promoted, experiment.RolledBack,
			experiment.Completed, experiment.Inconclusive, experiment.Aborted} {
			k := key{string(r.Spec.Type), r.Spec.Kind, string(st)}
			if _, ok := counts[k]; !ok {
				counts[k] = 0
			}
		}
		counts[key{string(r.Spec.Type), r.Spec.Kind, string(r.State)}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descExperiments, prometheus.GaugeValue, float64(n), k.typ, k.kind, k.state)
	}
}
