package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// phase is one stretch of an open-loop scenario: the arrival rate moves
// linearly from From to To requests per second over Duration.
type phase struct {
	Name     string
	From, To float64
	Duration time.Duration
}

// phaseResult is what one phase measured.
type phaseResult struct {
	name      string
	sent      int64
	ok        int64
	errs      map[string]int64
	shed      int64 // arrivals the generator could not send: too many in flight
	latencies []time.Duration
	elapsed   time.Duration
}

// runScenario sends requests at the scheduled times regardless of how fast
// kiln answers (open loop: a slow server does not slow the arrivals, which
// is what a closed-loop benchmark hides), and samples kiln's resident memory
// every sampleEvery.
func runScenario(base string, body []byte, phases []phase, maxInFlight int, sampleEvery time.Duration) ([]phaseResult, []memSample) {
	tr := &http.Transport{MaxIdleConnsPerHost: maxInFlight, MaxConnsPerHost: maxInFlight, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()

	var samples []memSample
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	start := time.Now()
	go func() {
		defer sampler.Done()
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			m := scrape(base)
			samples = append(samples, memSample{at: time.Since(start), rss: m["process_resident_memory_bytes"],
				heap: m["go_memstats_heap_inuse_bytes"], queued: m["kiln_queue_depth"]})
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
		}
	}()

	var results []phaseResult
	sem := make(chan struct{}, maxInFlight)
	for _, ph := range phases {
		res := phaseResult{name: ph.Name, errs: map[string]int64{}}
		var mu sync.Mutex
		var sent, ok, shed atomic.Int64
		var wg sync.WaitGroup
		phStart := time.Now()
		next := phStart
		for {
			elapsed := time.Since(phStart)
			if elapsed >= ph.Duration {
				break
			}
			frac := float64(elapsed) / float64(ph.Duration)
			rate := ph.From + (ph.To-ph.From)*frac
			if rate < 1 {
				rate = 1
			}
			next = next.Add(time.Duration(float64(time.Second) / rate))
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			select {
			case sem <- struct{}{}:
			default:
				shed.Add(1)
				continue
			}
			sent.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				t0 := time.Now()
				resp, err := client.Post(base+"/v1/jobs", "application/json", bytes.NewReader(body))
				lat := time.Since(t0)
				key := ""
				if err != nil {
					key = "transport"
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						key = "HTTP " + strconv.Itoa(resp.StatusCode)
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if key != "" {
					res.errs[key]++
					return
				}
				ok.Add(1)
				res.latencies = append(res.latencies, lat)
			}()
		}
		wg.Wait()
		res.elapsed = time.Since(phStart)
		res.sent, res.ok, res.shed = sent.Load(), ok.Load(), shed.Load()
		results = append(results, res)
	}
	close(stopSampling)
	sampler.Wait()
	return results, samples
}

type memSample struct {
	at        time.Duration
	rss, heap float64
	queued    float64
}

func reportScenario(results []phaseResult, samples []memSample) {
	fmt.Println("| phase | sent | accepted | errors | shed by generator | achieved/s | p50 | p99 | max |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
		q := func(p float64) time.Duration {
			if len(r.latencies) == 0 {
				return 0
			}
			return r.latencies[int(p*float64(len(r.latencies)-1))].Round(10 * time.Microsecond)
		}
		var errs int64
		for _, n := range r.errs {
			errs += n
		}
		fmt.Printf("| %s | %d | %d | %d %v | %d | %.0f | %s | %s | %s |\n", r.name, r.sent, r.ok, errs, r.errs, r.shed,
			float64(r.ok)/r.elapsed.Seconds(), q(0.5), q(0.99), q(1))
	}
	fmt.Println()
	fmt.Println("| t | kiln RSS MiB | Go heap in use MiB | queued jobs |")
	fmt.Println("|---|---|---|---|")
	for _, s := range samples {
		fmt.Printf("| %s | %.1f | %.1f | %.0f |\n", s.at.Round(time.Second), s.rss/(1<<20), s.heap/(1<<20), s.queued)
	}
}
