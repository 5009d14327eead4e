package tests

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestShadowAndArrivalsLive runs jobs through a real kiln and checks what
// the experiments side saw: the eviction shadow replayed every job start
// under each built-in eviction policy (JSON and /metrics), and the arrival
// recorder serves them as a trace behind the admin token and keeps them in
// the data dir across a restart.
func TestShadowAndArrivalsLive(t *testing.T) {
	dataDir := t.TempDir()
	k := startKiln(t, dataDir, "cost.time_scale=0.01")
	get := func(path string, token bool) (int, string) {
		t.Helper()
		if token {
			code, data := k.admin("GET", path, nil)
			return code, string(data)
		}
		code, data := k.do("GET", path, nil)
		return code, string(data)
	}

	const jobs = 6
	var ids []string
	for i := 0; i < jobs; i++ {
		ids = append(ids, k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 2, i), "batch"))
	}
	waitFor(t, 2*time.Minute, "jobs done", func() bool {
		for _, id := range ids {
			if k.job(id).State != "done" {
				return false
			}
		}
		return true
	})

	var rep struct {
		Accesses   int `json:"accesses"`
		Candidates []struct {
			Policy       string `json:"policy"`
			Live         bool   `json:"live"`
			Faulted      bool   `json:"faulted"`
			Hits, Misses int
			HitRatio     float64 `json:"hit_ratio"`
			BytesLoaded  uint64  `json:"bytes_loaded"`
		} `json:"candidates"`
	}
	waitFor(t, 10*time.Second, "the shadow to see every start", func() bool {
		code, body := get("/v1/experiments/shadow", false)
		return code == 200 && json.Unmarshal([]byte(body), &rep) == nil && rep.Accesses >= jobs
	})
	seen := map[string]bool{}
	for _, c := range rep.Candidates {
		seen[c.Policy] = true
		if c.Faulted || c.Hits+c.Misses < jobs || c.Misses == 0 || c.BytesLoaded == 0 {
			t.Errorf("candidate %+v", c)
		}
		if c.Live != (c.Policy == "gdsf") {
			t.Errorf("%s: live = %v (the configured eviction policy is gdsf)", c.Policy, c.Live)
		}
	}
	for _, p := range []string{"lru", "gdsf", "s3fifo"} {
		if !seen[p] {
			t.Errorf("no shadow of %s in %+v", p, rep)
		}
	}
	if _, metrics := get("/metrics", false); !strings.Contains(metrics, `kiln_shadow_hit_ratio{policy="gdsf"}`) {
		t.Error("/metrics has no kiln_shadow_hit_ratio")
	}

	if code, _ := get("/v1/experiments/trace", false); code != http.StatusUnauthorized {
		t.Errorf("trace without the token: HTTP %d, want 401", code)
	}
	if code, body := get("/v1/experiments/trace?limit=zero", true); code != http.StatusBadRequest || !strings.Contains(body, `"error"`) {
		t.Errorf("bad limit: HTTP %d %s, want a JSON 400", code, body)
	}
	countRows := func() int {
		code, body := get("/v1/experiments/trace", true)
		if code != 200 || !strings.HasPrefix(body, "time_s,models,class,deadline_ms\n") {
			t.Fatalf("trace: HTTP %d %s", code, body)
		}
		return strings.Count(body, "\n") - 1
	}
	if n := countRows(); n != jobs {
		t.Errorf("trace has %d arrivals, want %d", n, jobs)
	}

	k.stop()
	if _, err := os.Stat(filepath.Join(dataDir, "arrivals.csv")); err != nil {
		t.Fatalf("arrivals not kept in the data dir: %v", err)
	}
	k.start(freePort(t))
	if n := countRows(); n != jobs {
		t.Errorf("after a restart the trace has %d arrivals, want %d", n, jobs)
	}
}
