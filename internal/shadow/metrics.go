package shadow

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descHitRatio = prometheus.NewDesc("kiln_shadow_hit_ratio", "VRAM hit ratio the candidate eviction policy would have had on the live access stream.", []string{"policy"}, nil)
	// tier and device as kiln_tier_* and kiln_device_* spell them: a ghost
	// VRAM tier is tier="vram" with its device's index, not "vram:0".
	descTierRatio   = prometheus.NewDesc("kiln_shadow_tier_hit_ratio", "Hit ratio of one ghost tier under the candidate eviction policy (device: the GPU's index, for a VRAM tier).", []string{"policy", "tier", "device"}, nil)
	descMisses      = prometheus.NewDesc("kiln_shadow_misses_total", "VRAM misses the candidate eviction policy would have had.", []string{"policy"}, nil)
	descBytes       = prometheus.NewDesc("kiln_shadow_bytes_loaded_total", "Bytes the candidate eviction policy would have loaded, over all tiers.", []string{"policy"}, nil)
	descLoadSeconds = prometheus.NewDesc("kiln_shadow_load_seconds_total", "Estimated load time (bytes / measured bandwidth) the candidate would have spent, over all tiers.", []string{"policy"}, nil)
	descEvictions   = prometheus.NewDesc("kiln_shadow_evictions_total", "Evictions the candidate eviction policy would have made, over all tiers.", []string{"policy"}, nil)
	descFaulted     = prometheus.NewDesc("kiln_shadow_faulted", "1 when the candidate's policy faulted in its ghost and stopped being evaluated.", []string{"policy"}, nil)
	descAccesses    = prometheus.NewDesc("kiln_shadow_accesses_total", "Job starts replayed into the ghost caches.", nil, nil)
	descDropped     = prometheus.NewDesc("kiln_shadow_dropped_total", "Job starts the shadow feed lost.", nil, nil)
)

// Collector exports the shadow's report as Prometheus metrics.
func (s *Shadow) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Shadow }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHitRatio, descTierRatio, descMisses, descBytes, descLoadSeconds, descEvictions, descFaulted, descAccesses, descDropped} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	r := c.s.Report()
	ch <- prometheus.MustNewConstMetric(descAccesses, prometheus.CounterValue, float64(r.Accesses))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(r.Dropped))
	for _, cr := range r.Candidates {
		ch <- prometheus.MustNewConstMetric(descHitRatio, prometheus.GaugeValue, cr.HitRatio, cr.Policy)
		ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(cr.Misses), cr.Policy)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(cr.BytesLoaded), cr.Policy)
		ch <- prometheus.MustNewConstMetric(descLoadSeconds, prometheus.CounterValue, cr.LoadTimeS, cr.Policy)
		ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(cr.Evictions), cr.Policy)
		f := 0.0
		if cr.Faulted {
			f = 1
		}
		ch <- prometheus.MustNewConstMetric(descFaulted, prometheus.GaugeValue, f, cr.Policy)
		for _, t := range cr.Tiers {
			tier, device, _ := strings.Cut(t.Tier, ":")
			ch <- prometheus.MustNewConstMetric(descTierRatio, prometheus.GaugeValue, t.HitRatio, cr.Policy, tier, device)
		}
	}
}
