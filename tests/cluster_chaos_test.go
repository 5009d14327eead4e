package tests

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestChaosCluster is the cluster's long chaos run (`make chaos`; skipped
// without CHAOS_SECONDS, since TestClusterThreeNodes is the short one in
// make test): three `kiln nats` servers and three kiln nodes as real
// processes while clients submit to whichever node is up, and at random
// a kiln node or a NATS server is killed with SIGKILL and restarted on
// its own data (a node on a new port, a server on its ports and store).
// Afterwards every job a node accepted (202 with an id) is in the
// cluster's registry and ended, done or failed with a reason, and no
// submission with one Idempotency-Key made two jobs.
func TestChaosCluster(t *testing.T) {
	seconds, err := strconv.Atoi(os.Getenv("CHAOS_SECONDS"))
	if err != nil || seconds <= 0 {
		t.Skip("the cluster's chaos run is make chaos (CHAOS_SECONDS); make test runs TestClusterThreeNodes")
	}
	total := time.Duration(seconds) * time.Second

	servers := startNATSCluster(t)
	var urls []string
	for _, p := range servers {
		urls = append(urls, p.client)
	}
	nodes := make([]*kilnProc, 3)
	for i := range 3 {
		nodes[i] = startKiln(t, t.TempDir(), "cluster.nats="+strings.Join(urls, ","), fmt.Sprintf("cluster.node_id=node%d", i+1),
			"cluster.ack_wait=2s", "cost.time_scale=0.02", "workers.per_device=1", "policies.routing=random")
	}
	// One workflow per client and submission, made before the clients
	// start (loadWorkflow may fail the test, which a goroutine must not).
	const perClient = 4000
	var bodies [3][]byte
	for c := range 3 {
		bodies[c], _ = json.Marshal(map[string]any{"workflow": loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, 1), "class": "batch"})
	}
	seeded := func(c, n int) []byte {
		// Each job its own seed, so that the result cache answers none.
		return []byte(strings.Replace(string(bodies[c]), `"seed":1`, `"seed":`+strconv.Itoa(c*perClient+n+2), 1))
	}

	// The nodes' addresses change when one restarts; down marks the one
	// being restarted (clients skip it).
	var mu sync.Mutex
	down := -1
	accepted := map[string]string{} // Idempotency-Key → job id
	unanswered := 0
	pick := func(rng *rand.Rand) (*kilnProc, string) {
		mu.Lock()
		defer mu.Unlock()
		for {
			i := rng.IntN(3)
			if i != down {
				return nodes[i], nodes[i].base
			}
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for c := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 9))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("chaos-%d-%d", c, n)
				body := seeded(c, n)
				// A careful client: the same key until some node answers,
				// for up to 20 s (a node or a server may be down meanwhile).
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					_, base := pick(rng)
					req, _ := http.NewRequest("POST", base+"/v1/jobs", strings.NewReader(string(body)))
					req.Header.Set("Idempotency-Key", key)
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					var ans struct{ ID string }
					_ = json.NewDecoder(resp.Body).Decode(&ans)
					resp.Body.Close()
					if (resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK) && ans.ID != "" {
						mu.Lock()
						if prev, ok := accepted[key]; ok && prev != ans.ID {
							t.Errorf("Idempotency-Key %s made two jobs: %s and %s", key, prev, ans.ID)
						}
						accepted[key] = ans.ID
						mu.Unlock()
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				mu.Lock()
				if _, ok := accepted[key]; !ok {
					unanswered++
				}
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}

	rng := rand.New(rand.NewPCG(7, 11))
	nodeKills, serverKills := 0, 0
	start := time.Now()
	for time.Since(start) < total {
		time.Sleep(time.Duration(1500+rng.IntN(2000)) * time.Millisecond)
		if rng.IntN(2) == 0 {
			i := rng.IntN(3)
			mu.Lock()
			down = i
			mu.Unlock()
			nodes[i].kill9()
			nodeKills++
			time.Sleep(time.Duration(500+rng.IntN(2000)) * time.Millisecond)
			nodes[i].start(freePort(t))
			mu.Lock()
			down = -1
			mu.Unlock()
		} else {
			i := rng.IntN(3)
			servers[i].kill9() // restarted on its ports and store
			serverKills++
			time.Sleep(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
			servers[i].start(t)
		}
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	ids := make([]string, 0, len(accepted))
	for _, id := range accepted {
		ids = append(ids, id)
	}
	mu.Unlock()
	if len(ids) < 30 {
		t.Fatalf("only %d jobs accepted in %s; the run did not exercise the cluster", len(ids), total)
	}
	states := map[string]int{}
	var pending []string
	waitFor(t, 5*time.Minute, "every accepted job to end", func() bool {
		pending = pending[:0]
		clear(states)
		for _, id := range ids {
			code, data := nodes[rng.IntN(3)].do("GET", "/v1/jobs/"+id, nil)
			var j clusterJobJSON
			if code != http.StatusOK || json.Unmarshal(data, &j) != nil {
				pending = append(pending, id+" (HTTP "+strconv.Itoa(code)+")")
				continue
			}
			states[j.State]++
			switch j.State {
			case "done", "cancelled":
			case "failed":
				if j.Error == nil || *j.Error == "" {
					t.Errorf("job %s failed without a reason", id)
				}
			default:
				pending = append(pending, id+" ("+j.State+")")
			}
		}
		return len(pending) == 0
	})
	t.Logf("chaos: cluster %s, %d node kills, %d NATS server kills; accepted %d (unanswered after 20 s: %d); done %d, failed %d",
		total, nodeKills, serverKills, len(ids), unanswered, states["done"], states["failed"])
}
