package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// metricValue returns the value of the sample of family name whose labels
// include want, and whether there is one.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) (float64, bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue samples
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// TestMetrics drives a hostile module through an error status and a trap,
// then an auto-rollback and a manual one, and reads each back from the
// collector.
func TestMetrics(t *testing.T) {
	wasm := wasmOf(t, "hostile")
	h := newTestHost(t, Config{MaxFaults: 3})
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.Collector())
	jobs, workers, _ := sampleViews()
	if _, err := h.Load(context.Background(), abi.KindScheduling, "bad", wasm, true, "test"); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{"kind": "scheduling", "policy": "bad", "version": "1"}
	if v, ok := metricValue(t, reg, "kiln_policy_active_info", bad); !ok || v != 1 {
		t.Errorf("kiln_policy_active_info for bad@1 = %v, %v; want 1", v, ok)
	}
	lat0, _ := metricValue(t, reg, "kiln_policy_decision_seconds", map[string]string{"kind": "scheduling"})
	for _, mode := range []float64{6, 3} { // error status, then a panic (trap)
		if err := h.SetParam(abi.KindScheduling, "mode", mode); err != nil {
			t.Fatal(err)
		}
		h.Scheduler().Next(jobs, workers)
	}
	for reason, want := range map[string]float64{FaultStatus: 1, FaultTrap: 1, FaultTimeout: 0} {
		l := map[string]string{"kind": "scheduling", "policy": "bad", "version": "1", "reason": reason}
		if v, ok := metricValue(t, reg, "kiln_policy_faults_total", l); !ok || v != want {
			t.Errorf("faults{reason=%s} = %v, %v; want %v", reason, v, ok, want)
		}
	}
	h.Scheduler().Next(jobs, workers) // the third fault rolls back
	if v, _ := metricValue(t, reg, "kiln_policy_rollbacks_total", map[string]string{"kind": "scheduling", "trigger": "auto"}); v != 1 {
		t.Errorf("auto rollbacks = %v, want 1", v)
	}
	if _, ok := metricValue(t, reg, "kiln_policy_active_info", bad); ok {
		t.Error("bad@1 still reported active after the rollback")
	}
	if v, _ := metricValue(t, reg, "kiln_policy_decisions_total", map[string]string{"kind": "scheduling", "policy": "bad"}); v != 3 {
		t.Errorf("decisions of bad@1 = %v, want 3", v)
	}
	if _, err := h.Activate(context.Background(), abi.KindScheduling, "fifo", 0, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Rollback(abi.KindScheduling, "test"); err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(t, reg, "kiln_policy_rollbacks_total", map[string]string{"kind": "scheduling", "trigger": "manual"}); v != 1 {
		t.Errorf("manual rollbacks = %v, want 1", v)
	}
	if v, _ := metricValue(t, reg, "kiln_policy_decision_seconds", map[string]string{"kind": "scheduling"}); v-lat0 != 3 {
		t.Errorf("decision latency samples grew by %v, want 3", v-lat0)
	}
	// Names and help pass Prometheus's own lint.
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "kiln_policy_") || f.GetHelp() == "" {
			t.Errorf("metric %s: want a kiln_policy_ name and help", f.GetName())
		}
	}
}
