package tests

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestChaosNoAcceptedJobLost submits jobs continuously while worker
// processes are killed at random and kiln itself is killed once and
// restarted on the same data directory. Afterwards every job that kiln
// accepted (answered 202) is in the store exactly once and ended done, or
// failed with a reason. `make chaos` runs it longer (CHAOS_SECONDS).
func TestChaosNoAcceptedJobLost(t *testing.T) {
	seconds := 12
	if v, err := strconv.Atoi(os.Getenv("CHAOS_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	total := time.Duration(seconds) * time.Second
	dataDir := t.TempDir()
	k := startKiln(t, dataDir, "cost.time_scale=0.02", "workers.ping_interval=200ms", "workers.restart_backoff_max=200ms")
	body, _ := json.Marshal(map[string]any{
		"workflow": loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 10, 1),
		"class":    "batch",
	})

	var mu sync.Mutex
	var accepted []string
	refused := 0
	base := func() string { mu.Lock(); defer mu.Unlock(); return k.base }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Post(base()+"/v1/jobs", "application/json", bytes.NewReader(body))
				if err != nil {
					// kiln is down (being restarted): not accepted, retry later.
					mu.Lock()
					refused++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					continue
				}
				var acc struct{ ID string }
				_ = json.NewDecoder(resp.Body).Decode(&acc)
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode == http.StatusAccepted && acc.ID != "" {
					accepted = append(accepted, acc.ID)
				} else {
					refused++
				}
				mu.Unlock()
				time.Sleep(40 * time.Millisecond)
			}
		}()
	}

	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	kills, pluginKills, rounds, restarted := 0, 0, 0, false
	for time.Since(start) < total {
		time.Sleep(700 * time.Millisecond)
		if !restarted && time.Since(start) > total/2 {
			k.kill9()
			// Submitters meanwhile get connection errors (not accepted);
			// they see the new address once kiln is ready again.
			mu.Lock()
			k.start(freePort(t))
			mu.Unlock()
			restarted = true
			continue
		}
		var pids []int
		workers := map[int]bool{}
		for _, w := range k.workers() {
			if w.PID > 0 {
				pids = append(pids, w.PID)
				workers[w.PID] = true
			}
		}
		// Every third kill takes a plugin (storage or loader) instead: the
		// tiers restart it on their next call and retry.
		if rounds++; rounds%3 == 0 {
			var plugins []int
			for _, c := range childPIDs(k.cmd.Process.Pid) {
				if !workers[c] {
					plugins = append(plugins, c)
				}
			}
			if len(plugins) > 0 {
				_ = syscallKill(plugins[rng.IntN(len(plugins))])
				pluginKills++
				continue
			}
		}
		if len(pids) > 0 {
			_ = syscallKill(pids[rng.IntN(len(pids))])
			kills++
		}
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	ids := append([]string(nil), accepted...)
	mu.Unlock()
	if len(ids) < 20 {
		t.Fatalf("only %d jobs accepted; the test did not exercise kiln", len(ids))
	}
	var list struct{ Jobs []jobJSON }
	waitFor(t, 3*time.Minute, "every accepted job to end", func() bool {
		_, data := k.do("GET", "/v1/jobs?limit=10000", nil)
		list.Jobs = nil
		_ = json.Unmarshal(data, &list)
		for _, j := range list.Jobs {
			if j.State == "queued" || j.State == "running" {
				return false
			}
		}
		return true
	})
	seen := map[string]int{}
	states := map[string]int{}
	for _, j := range list.Jobs {
		seen[j.ID]++
		states[j.State]++
		if j.State == "failed" && (j.Error == nil || *j.Error == "") {
			t.Errorf("job %s failed without a reason", j.ID)
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("job %s appears %d times", id, n)
		}
	}
	lost := 0
	for _, id := range ids {
		if seen[id] == 0 {
			lost++
			t.Errorf("accepted job %s is lost", id)
		}
	}
	t.Logf("chaos: %s, %d worker kills, %d plugin kills, 1 kiln kill -9 + restart; accepted %d, refused/unreachable %d; in store %d: done %d, failed %d; lost %d",
		total, kills, pluginKills, len(ids), refused, len(list.Jobs), states["done"], states["failed"], lost)
	if states["done"] == 0 {
		t.Fatal("no job completed")
	}
}
