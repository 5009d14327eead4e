// Command loadgen measures kiln's durable submit path from a separate
// process on loopback: POST /v1/jobs throughput and latency percentiles,
// against a baseline of the same requests with ?dry_run=1 (identical parsing
// and validation, no durable commit), measured in the same run.
//
//	go run ./tests/loadgen -duration 10s -concurrency 64
//
// Without -addr it starts bin/kiln serve itself on a free loopback port with
// a fresh data directory and a tiny synthetic model store, and stops it at
// the end.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "", "kiln base URL; empty starts bin/kiln serve")
	duration := flag.Duration("duration", 10*time.Second, "length of each phase")
	concurrency := flag.Int("concurrency", 64, "concurrent connections")
	kilnBin := flag.String("kiln", "bin/kiln", "kiln binary, when starting one")
	workflowFile := flag.String("workflow", "examples/workflows/salad-comfyui-api__sd1.5-txt2img.api.json", "workflow to submit")
	scenario := flag.Bool("scenario", false, "run the open-loop scenario (ramp, sustained, spike) instead of the closed-loop comparison")
	ramp := flag.Duration("ramp", 60*time.Second, "scenario: ramp from 1 to -ramp-to submissions/s over this long")
	rampTo := flag.Float64("ramp-to", 1000, "scenario: rate at the end of the ramp")
	sustain := flag.Duration("sustain", 10*time.Minute, "scenario: how long to sustain -sustain-rate")
	sustainRate := flag.Float64("sustain-rate", 500, "scenario: sustained submissions/s")
	spike := flag.Duration("spike", 10*time.Second, "scenario: how long the spike lasts")
	spikeRate := flag.Float64("spike-rate", 2000, "scenario: submissions/s during the spike")
	prompt := flag.Bool("prompt", false, "also measure POST /prompt (ComfyUI's API) after the durable phase, each prompt with a seed of its own so that none is answered from the result cache, and the baseline again at the end")
	rounds := flag.Int("rounds", 0, "alternate the phases this many times against one kiln (validate-only, durable /v1/jobs, then /prompt with -prompt), reporting each phase's rate, p99 and kiln's CPU per request, and each round's ratios; 0: the single comparison")
	profileDir := flag.String("profile-dir", "", "with -rounds: save a CPU profile of kiln for each phase here (needs api.pprof=true, e.g. -set api.pprof=true)")
	var sets multiFlag
	flag.Var(&sets, "set", "extra config key=value for the kiln loadgen starts (repeatable)")
	flag.Parse()

	base := *addr
	if base == "" {
		// The closed-loop comparison keeps the workers at real-time cost
		// (they barely use the CPU); the long scenario runs jobs at 1/1000
		// of it so that the workers drain the queue and memory reaches a
		// steady state instead of growing with a backlog.
		extra := []string{"--set", "workers.per_device=1"}
		if *scenario {
			extra = []string{"--set", "workers.per_device=2", "--set", "cost.time_scale=0.001"}
		}
		for _, kv := range sets {
			extra = append(extra, "--set", kv)
		}
		stop, b, pid, err := startKiln(*kilnBin, extra...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		defer stop()
		base = b
		kilnPID = pid
	}
	wf, err := os.ReadFile(*workflowFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	body := []byte(fmt.Sprintf(`{"workflow": %s, "class": "batch"}`, wf))

	if *scenario {
		fmt.Printf("machine: %s/%s, %d CPUs; kiln at %s; open loop, at most %d in flight\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), base, *concurrency)
		results, samples := runScenario(base, body, []phase{
			{Name: fmt.Sprintf("ramp 1→%.0f/s", *rampTo), From: 1, To: *rampTo, Duration: *ramp},
			{Name: fmt.Sprintf("sustained %.0f/s", *sustainRate), From: *sustainRate, To: *sustainRate, Duration: *sustain},
			{Name: fmt.Sprintf("spike %.0f/s", *spikeRate), From: *spikeRate, To: *spikeRate, Duration: *spike},
			{Name: fmt.Sprintf("after spike %.0f/s", *sustainRate), From: *sustainRate, To: *sustainRate, Duration: *spike * 3},
		}, *concurrency, 10*time.Second)
		reportScenario(results, samples)
		return
	}
	fmt.Printf("machine: %s/%s, %d CPUs; kiln at %s; concurrency %d; %s per phase\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), base, *concurrency, *duration)
	if *rounds > 0 {
		runRounds(base, wf, body, *rounds, *concurrency, *duration, *prompt, *profileDir)
		return
	}
	before := scrape(base)
	same := func(int) []byte { return body }
	dry := run(base+"/v1/jobs?dry_run=1", same, *concurrency, *duration, http.StatusOK)
	durable := run(base+"/v1/jobs", same, *concurrency, *duration, http.StatusAccepted)
	after := scrape(base)

	report("baseline: POST /v1/jobs?dry_run=1 (validate only)", dry)
	report("durable:  POST /v1/jobs (fsync before 202)", durable)
	if *prompt {
		seeded, err := seededPrompt(wf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		p := run(base+"/prompt", seeded, *concurrency, *duration, http.StatusOK)
		dry2 := run(base+"/v1/jobs?dry_run=1", same, *concurrency, *duration, http.StatusOK)
		report("durable:  POST /prompt (fsync before 200)", p)
		report("baseline again: POST /v1/jobs?dry_run=1 (validate only)", dry2)
		if dry.ok > 0 && dry2.ok > 0 && p.ok > 0 {
			fmt.Printf("/prompt / baseline throughput ratio: %.2f (against the mean of both baseline phases; the second alone: %.2f)\n",
				p.rate()/((dry.rate()+dry2.rate())/2), p.rate()/dry2.rate())
		}
	}
	jobs := after["kiln_jobs_submitted_total"] - before["kiln_jobs_submitted_total"]
	sub := after[`kiln_queue_commits_total{kind="submit"}`] - before[`kiln_queue_commits_total{kind="submit"}`]
	all := after["kiln_queue_commits_total"] - before["kiln_queue_commits_total"]
	if jobs > 0 {
		fmt.Printf("durable commits: %.0f carried the %.0f submitted jobs = %.4f fsyncs/job (group commit); %.0f commits in all incl. job state changes = %.4f per job\n",
			sub, jobs, sub/jobs, all, all/jobs)
	}
	if dry.ok > 0 && durable.ok > 0 {
		fmt.Printf("durable/baseline throughput ratio: %.2f\n", durable.rate()/dry.rate())
	}
	fmt.Printf("kiln RSS after: %.1f MiB\n", after["process_resident_memory_bytes"]/(1<<20))
}

type result struct {
	ok, errs  int
	firstErr  string
	latencies []time.Duration
	elapsed   time.Duration
}

func (r result) rate() float64 { return float64(r.ok) / r.elapsed.Seconds() }

// seededPrompt returns a /prompt body for the API-format workflow wf whose
// first "seed" is n: identical prompts would be answered from kiln's
// result cache once the first finished, and measure the cache, not submit.
func seededPrompt(wf []byte) (func(n int) []byte, error) {
	loc := regexp.MustCompile(`"seed":\s*\d+`).FindIndex(wf)
	if loc == nil {
		return nil, errors.New("the workflow has no seed to vary for /prompt")
	}
	prefix := append([]byte(`{"prompt": `), wf[:loc[0]]...)
	prefix = append(prefix, `"seed": `...)
	suffix := append(append([]byte{}, wf[loc[1]:]...), '}')
	return func(n int) []byte {
		b := make([]byte, 0, len(prefix)+len(suffix)+20)
		b = append(b, prefix...)
		b = strconv.AppendInt(b, int64(n), 10)
		return append(b, suffix...)
	}, nil
}

// run posts body(n), n counting up per client from a range of its own, from
// conc clients for d, and expects status want.
func run(url string, body func(n int) []byte, conc int, d time.Duration, want int) result {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var res result
	var wg sync.WaitGroup
	start := time.Now()
	for client := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lats []time.Duration
			ok, errs, sent := 0, 0, 0
			first := ""
			for ctx.Err() == nil {
				t0 := time.Now()
				sent++
				resp, err := c.Post(url, "application/json", bytes.NewReader(body(client<<32|sent)))
				if err != nil {
					if ctx.Err() == nil {
						errs++
						if first == "" {
							first = err.Error()
						}
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat := time.Since(t0)
				if resp.StatusCode != want {
					errs++
					if first == "" {
						first = "HTTP " + strconv.Itoa(resp.StatusCode)
					}
					continue
				}
				ok++
				lats = append(lats, lat)
			}
			mu.Lock()
			res.ok += ok
			res.errs += errs
			res.latencies = append(res.latencies, lats...)
			if res.firstErr == "" {
				res.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	tr.CloseIdleConnections()
	return res
}

func report(name string, r result) {
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	p := func(q float64) time.Duration {
		if len(r.latencies) == 0 {
			return 0
		}
		return r.latencies[int(q*float64(len(r.latencies)-1))]
	}
	fmt.Printf("%s\n  %d ok, %d errors in %s: %.0f req/s; latency p50 %s p99 %s max %s\n",
		name, r.ok, r.errs, r.elapsed.Round(time.Millisecond), r.rate(), p(0.5), p(0.99), p(1))
	if r.firstErr != "" {
		fmt.Printf("  first error: %s\n", r.firstErr)
	}
}

// scrape reads the unlabelled and summed series of /metrics.
func scrape(base string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		// Each series by its full name, and each metric summed over its
		// labels by its bare name.
		if i := strings.IndexByte(name, '{'); i >= 0 {
			out[name] = v
			name = name[:i]
		}
		out[name] += v
	}
	return out
}

// startKiln runs kiln serve in the background with a fresh data dir and
// returns how to stop it, its base URL and its process id.
func startKiln(bin string, extraArgs ...string) (func(), string, int, error) {
	dir, err := os.MkdirTemp("", "kiln-loadgen-")
	if err != nil {
		return nil, "", 0, err
	}
	models := filepath.Join(dir, "models")
	if out, err := exec.Command(bin, "models", "synth", "--dir", models, "--from-workflows", "examples/workflows", "--scale", "0.0005").CombinedOutput(); err != nil {
		return nil, "", 0, fmt.Errorf("synth: %v: %s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", 0, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data-dir", filepath.Join(dir, "data"), "--models", models,
		"--set", "log.level=warn", "--set", "log.format=json",
		"--set", "queue.batch_limit=10000000", "--set", "queue.interactive_limit=10000000")
	cmd.Args = append(cmd.Args, extraArgs...)
	logf, err := os.Create(filepath.Join(dir, "kiln.log"))
	if err != nil {
		return nil, "", 0, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, "", 0, err
	}
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return nil, "", 0, fmt.Errorf("kiln did not become ready; log in %s", logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		os.RemoveAll(dir)
	}
	return stop, base, cmd.Process.Pid, nil
}
