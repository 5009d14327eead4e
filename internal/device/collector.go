package device

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the devices' readings to Prometheus, sampled at scrape
// time so that a scrape sees what NVML (or the simulator) says now rather
// than a cached value of unknown age. Readings a device does not report are
// left out, not exported as zero: a zero temperature would look like a
// sensor, and a missing series is what Prometheus means by "unknown".
func (s *Set) Collector() prometheus.Collector { return deviceCollector{s} }

var deviceLabels = []string{"device", "name", "uuid", "backend", "simulated"}

var (
	descMemTotal  = prometheus.NewDesc("kiln_device_memory_total_bytes", "Device memory as the driver reports it.", deviceLabels, nil)
	descMemUsed   = prometheus.NewDesc("kiln_device_memory_used_bytes", "Device memory in use by every process (NVML), or the ledger's for a simulated device.", deviceLabels, nil)
	descUtil      = prometheus.NewDesc("kiln_device_utilization_ratio", "Share of the last sample period in which a kernel ran (0-1).", deviceLabels, nil)
	descTemp      = prometheus.NewDesc("kiln_device_temperature_celsius", "GPU core temperature.", deviceLabels, nil)
	descThrottle  = prometheus.NewDesc("kiln_device_throttle_reason", "1 for each active clock event (throttle) reason; the idle reason is left out.", append(append([]string(nil), deviceLabels...), "reason"), nil)
	descDegraded  = prometheus.NewDesc("kiln_device_degraded", "1 when the balancer avoids the device (throttled, ECC errors, or unreadable).", deviceLabels, nil)
	descLedgerUse = prometheus.NewDesc("kiln_device_ledger_usable_bytes", "Memory the ledger may hand out (total less headroom).", deviceLabels, nil)
	// Was kiln_vram_reserved_bytes{device="<name>"}: one label scheme for
	// a device, the same as every kiln_device_ series.
	descLedgerRes = prometheus.NewDesc("kiln_device_ledger_reserved_bytes", "Memory reserved in the device's VRAM ledger (models, worker contexts, activations).", deviceLabels, nil)
)

type deviceCollector struct{ s *Set }

func (c deviceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMemTotal, descMemUsed, descUtil, descTemp, descThrottle, descDegraded, descLedgerUse, descLedgerRes} {
		ch <- d
	}
}

func (c deviceCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.Describe() {
		labels := []string{strconv.Itoa(st.Index), st.Name, st.UUID, st.Backend, strconv.FormatBool(st.Simulated)}
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(labels, extra...)...)
		}
		gauge(descMemTotal, float64(st.MemoryTotal))
		gauge(descLedgerUse, float64(st.Usable))
		gauge(descLedgerRes, float64(st.Reserved))
		if st.MemoryUsed != nil {
			gauge(descMemUsed, float64(*st.MemoryUsed))
		}
		if st.Utilization != nil {
			gauge(descUtil, float64(*st.Utilization)/100)
		}
		if st.TemperatureC != nil {
			gauge(descTemp, float64(*st.TemperatureC))
		}
		for _, r := range st.ThrottleReasons {
			gauge(descThrottle, 1, r)
		}
		degraded := 0.0
		if st.Degraded {
			degraded = 1
		}
		gauge(descDegraded, degraded)
	}
}
