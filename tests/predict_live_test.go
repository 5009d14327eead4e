package tests

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPredictorWarmsTheNextModelLive runs kiln with dispatch.predict on and
// a RAM tier that holds one SD1.5 checkpoint at a time, and submits jobs
// that alternate between two checkpoints, one at a time with idle gaps: the
// lookahead never sees the next job (the queue is empty), and the RAM tier
// holds the last job's checkpoint, so only the predictor, which has learnt
// that A follows B and B follows A, brings the next one in. Its metrics
// count the warms and the jobs that used them.
func TestPredictorWarmsTheNextModelLive(t *testing.T) {
	// One small device and a RAM tier of 2 MB, which holds one of the two
	// (scaled-down, 1.2 MB) checkpoints at a time.
	k := startKiln(t, t.TempDir(), "dispatch.predict=true", "tiers.ram.capacity_bytes=2000000",
		"tiers.ram.target_fill=1", "cost.time_scale=0.01", "workers.per_device=1",
		"devices.simulated=[{name: small, memory_bytes: 5368709120, h2d_bytes_per_s: 12e9, compute_factor: 1}]")
	ckpts := []string{"dreamshaper_8.safetensors", "v1-5-pruned-emaonly.ckpt"}
	run := func(i int) {
		wf := loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 1, i)
		for _, n := range wf {
			if in, ok := n.(map[string]any)["inputs"].(map[string]any); ok {
				if _, ok := in["ckpt_name"]; ok {
					in["ckpt_name"] = ckpts[i%2]
				}
			}
		}
		id := k.submit(wf, "batch")
		waitFor(t, 20*time.Second, "job "+id, func() bool {
			s := k.job(id).State
			if s == "failed" || s == "cancelled" {
				t.Fatalf("job %s %s", id, s)
			}
			return s == "done"
		})
	}
	metric := func(name string) float64 {
		_, data := k.do("GET", "/metrics", nil)
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return -1
	}
	for i := range 4 { // learn the alternation
		run(i)
	}
	if metric("kiln_predict_hit_ratio") < 0 {
		t.Fatal("kiln_predict_hit_ratio is not exported with dispatch.predict on")
	}
	// Now each gap is long enough for a plan (every 2 s): the next model is
	// warmed before its job arrives, and the job uses it.
	for i := 4; i < 8; i++ {
		time.Sleep(2500 * time.Millisecond)
		run(i)
	}
	warmed := metric(`kiln_predict_warms_total{outcome="warmed"}`)
	used := metric(`kiln_predict_warms_total{outcome="used"}`)
	if warmed < 1 || used < 1 {
		t.Fatalf("predictor warmed %v models and %v were used; want both ≥ 1\n%s", warmed, used, k.logTail())
	}
	// The books in bytes: what the used warms brought (each checkpoint is
	// 1.2 MB here), and the wasted bytes exported even when none were.
	if b := metric(`kiln_predict_outcome_bytes_total{outcome="used"}`); b < 1e6*used {
		t.Fatalf("kiln_predict_outcome_bytes_total{outcome=\"used\"} = %v for %v used warms; want ≥ 1 MB each", b, used)
	}
	if metric(`kiln_predict_outcome_bytes_total{outcome="wasted"}`) < 0 {
		t.Fatal("kiln_predict_outcome_bytes_total{outcome=\"wasted\"} is not exported")
	}
	t.Logf("warmed %v, used %v, wasted %v, hit ratio %v", warmed, used,
		metric(`kiln_predict_warms_total{outcome="wasted"}`), metric("kiln_predict_hit_ratio"))
}
