package tier

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports Stats as kiln_tier_* metrics labelled by tier.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

type collector struct{ m *Manager }

var (
	descCapacity  = prometheus.NewDesc("kiln_tier_capacity_bytes", "Capacity of a cache tier.", []string{"tier"}, nil)
	descUsed      = prometheus.NewDesc("kiln_tier_used_bytes", "Bytes held by a cache tier.", []string{"tier"}, nil)
	descEntries   = prometheus.NewDesc("kiln_tier_entries", "Models held by a cache tier.", []string{"tier"}, nil)
	descHits      = prometheus.NewDesc("kiln_tier_hits_total", "Lookups a cache tier answered.", []string{"tier"}, nil)
	descMisses    = prometheus.NewDesc("kiln_tier_misses_total", "Lookups a cache tier could not answer.", []string{"tier"}, nil)
	descBytesIn   = prometheus.NewDesc("kiln_tier_bytes_in_total", "Bytes written into a cache tier.", []string{"tier"}, nil)
	descBytesOut  = prometheus.NewDesc("kiln_tier_bytes_out_total", "Bytes read out of a cache tier.", []string{"tier"}, nil)
	descEvictions = prometheus.NewDesc("kiln_tier_evictions_total", "Entries a cache tier evicted.", []string{"tier"}, nil)
	descCorrupt   = prometheus.NewDesc("kiln_tier_corrupt_total", "Entries dropped because they did not verify.", []string{"tier"}, nil)
	descBandwidth = prometheus.NewDesc("kiln_tier_bandwidth_bytes_per_second", "Measured transfer rate into a cache tier.", []string{"tier"}, nil)
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCapacity, descUsed, descEntries, descHits, descMisses, descBytesIn, descBytesOut, descEvictions, descCorrupt, descBandwidth} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.m.Stats() {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Name)
		}
		n := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), s.Name)
		}
		g(descCapacity, float64(s.CapacityBytes))
		g(descUsed, float64(s.UsedBytes))
		g(descEntries, float64(s.Entries))
		n(descHits, s.Hits)
		n(descMisses, s.Misses)
		n(descBytesIn, s.BytesIn)
		n(descBytesOut, s.BytesOut)
		n(descEvictions, s.Evictions)
		n(descCorrupt, s.Corrupt)
		g(descBandwidth, s.BandwidthBytesPerS)
	}
}
