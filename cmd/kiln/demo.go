package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-gpu/kiln/internal/node"
)

// cmdDemo is `make run`: it makes a demo model store on first use, starts a
// full kiln node (real worker processes on simulated GPUs unless real ones
// are present), submits a mixed workload over the real HTTP API, shows live
// progress and a summary, and keeps serving until Ctrl-C.
const demoHelp = `usage: kiln demo [flags]

What make run runs: makes a synthetic model store on first use, starts a
full kiln node (real worker processes on simulated GPUs unless real ones
are present), submits a mixed workload over the HTTP API, shows live
progress and a summary, and keeps serving until Ctrl-C (or --exit).

With --nodes N (make cluster-demo: 3) it runs a cluster instead: N kiln
nats servers routed to each other and N kiln nodes joined to them, each a
process of its own, in a fresh --data-dir (default demo/cluster); the jobs
go to the nodes in turn, progress is shown per node, and Ctrl-C stops
every process.
`

func cmdDemo(args []string) error {
	fs := newFlags("demo", demoHelp)
	var sf serveFlags
	sf.register(fs.FlagSet)
	jobs := fs.Int("jobs", 40, "number of demo jobs to submit")
	workflows := fs.String("workflows", "examples/workflows", "API-format workflows to draw the workload from")
	scale := fs.Float64("scale", defaultSynthScale, "synthetic model size as a fraction of the real size")
	exit := fs.Bool("exit", false, "stop after the summary instead of serving until Ctrl-C")
	seed := fs.Uint64("seed", 7, "seed for the workload mix")
	nodes := fs.Int("nodes", 1, "run a cluster of `N` kiln nodes and N `kiln nats` servers as processes (make cluster-demo: 3)")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("demo", "unexpected argument %q", pos[0])
	}
	if sf.dataDir == "" {
		sf.dataDir = "demo/data"
		if *nodes > 1 {
			sf.dataDir = "demo/cluster"
		}
	}
	if sf.models == "" {
		sf.models = "demo/models"
	}
	cfg, err := sf.load(sf.overrides()...)
	if err != nil {
		return err
	}
	out := os.Stdout
	if _, err := os.Stat(filepath.Join(cfg.ModelsDir, ".synth-done")); err != nil {
		fmt.Fprintf(out, "==> first run: synthesizing a demo model store in %s (scale %.3f of real sizes)\n", cfg.ModelsDir, *scale)
		t0 := time.Now()
		written, err := synthStore(cfg.ModelsDir, *workflows, *scale, 1, nil)
		if err != nil {
			return fmt.Errorf("synthesize demo models: %w", err)
		}
		var total int64
		for _, w := range written {
			total += w.Bytes
		}
		fmt.Fprintf(out, "    %d real .safetensors files, %.0f MiB, in %s\n", len(written), float64(total)/(1<<20), time.Since(t0).Round(time.Millisecond))
		if err := os.WriteFile(filepath.Join(cfg.ModelsDir, ".synth-done"), nil, 0o644); err != nil {
			return err
		}
	}

	if *nodes > 1 {
		if err := freshClusterDir(cfg.DataDir); err != nil {
			return err
		}
		ctx, stop := signalContext()
		defer stop()
		return clusterDemo(ctx, *nodes, cfg.DataDir, cfg.ModelsDir, sf.sets, *workflows, *jobs, *seed, *exit, out)
	}

	logPath := filepath.Join(cfg.DataDir, "kiln.log")
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log, err := newLogger(cfg, logFile)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	listening := make(chan net.Addr, 1)
	n, err := node.New(cfg, node.Options{Log: log, OnListening: func(a net.Addr) { listening <- a }})
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- n.Run(ctx) }()
	var addr net.Addr
	select {
	case addr = <-listening:
	case err := <-runErr:
		return err
	}
	base := "http://" + addr.String()
	c := newClient(base)
	fmt.Fprintf(out, "==> kiln serving on %s (log: %s)\n", base, logPath)
	for _, d := range n.Devices.Describe() {
		label := d.Backend
		if d.Simulated {
			label = "SIMULATED"
		}
		fmt.Fprintf(out, "    device %d: %s, %s, %s\n", d.Index, d.Name, gib(d.MemoryTotal), label)
	}
	if err := waitReady(ctx, c); err != nil {
		return err
	}
	fmt.Fprintf(out, "==> %d workers ready\n", n.Pool.Ready())

	ids, err := submitDemo(ctx, []*client{c}, *workflows, *jobs, *seed, out)
	if err != nil {
		return err
	}
	t0 := time.Now()
	views := watchDemo(ctx, c, ids, out)
	printSummary(out, views, time.Since(t0), n.Pool.Restarts(), base)
	if m := scrapeMetrics(ctx, c); m != nil {
		fmt.Fprintf(out, "model loads %.0f (%.1f s loading in all), evictions %.0f\n",
			m["kiln_model_loads_total"], m["kiln_model_load_seconds_sum"], m["kiln_model_evictions_total"])
	}
	if *exit || ctx.Err() != nil {
		stop()
		return <-runErr
	}
	fmt.Fprintf(out, "==> kiln keeps serving on %s; try `bin/kiln submit examples/workflows/salad-comfyui-api__sd1.5-txt2img.api.json --wait`. Ctrl-C stops it.\n", base)
	return <-runErr
}

func waitReady(ctx context.Context, c *client) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c.do(ctx, http.MethodGet, "/readyz", nil, nil) == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("no worker became ready within 60s; see the log")
}

// submitDemo submits a mix of the example workflows: a third interactive,
// the rest batch, with fresh seeds so that every job does real work. With
// several nodes' clients (the cluster demo) the jobs go to them in turn:
// any node accepts any job.
func submitDemo(ctx context.Context, clients []*client, dir string, n int, seed uint64, out io.Writer) ([]string, error) {
	usable, err := demoWorkflows(ctx, clients[0], dir, out)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	to := ""
	if len(clients) > 1 {
		to = fmt.Sprintf(" to the %d nodes in turn", len(clients))
	}
	fmt.Fprintf(out, "==> submitting %d jobs drawn from %d workflows%s\n", n, len(usable), to)
	ids := make([]string, 0, n)
	for i := range n {
		w := usable[rng.IntN(len(usable))]
		g := reseed(w.graph, rng.Uint64()>>12)
		class := "batch"
		if i%3 == 0 {
			class = "interactive"
		}
		body, _ := json.Marshal(map[string]any{"workflow": g, "class": class})
		var acc struct {
			ID string `json:"id"`
		}
		c := clients[i%len(clients)]
		if err := c.do(ctx, http.MethodPost, "/v1/jobs", body, &acc); err != nil {
			return ids, fmt.Errorf("submit %s to %s: %w", w.name, c.base, err)
		}
		ids = append(ids, acc.ID)
	}
	return ids, nil
}

// demoWorkflow is one of the demo's workflows kiln accepts.
type demoWorkflow struct {
	name  string
	graph map[string]any
}

// demoWorkflows reads the demo's workflows and keeps those the node
// accepts (a dry run), saying why it refuses the others: the demo shows
// what kiln refuses and why, then draws its workload from the rest.
func demoWorkflows(ctx context.Context, c *client, dir string, out io.Writer) ([]demoWorkflow, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no workflows in %s", dir)
	}
	sort.Strings(files)
	var usable []demoWorkflow
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var g map[string]any
		if err := json.Unmarshal(data, &g); err != nil {
			continue
		}
		body, _ := json.Marshal(map[string]any{"workflow": g, "class": "batch"})
		if err := c.do(ctx, http.MethodPost, "/v1/jobs?dry_run=1", body, nil); err != nil {
			fmt.Fprintf(out, "    refused %-60s %v\n", filepath.Base(f), err)
			continue
		}
		usable = append(usable, demoWorkflow{name: strings.TrimSuffix(filepath.Base(f), ".api.json"), graph: g})
	}
	if len(usable) == 0 {
		return nil, errors.New("kiln accepted none of the demo workflows")
	}
	return usable, nil
}

// reseed copies a graph with every sampler seed replaced.
func reseed(g map[string]any, seed uint64) map[string]any {
	data, _ := json.Marshal(g)
	var cp map[string]any
	_ = json.Unmarshal(data, &cp)
	for _, node := range cp {
		n, ok := node.(map[string]any)
		if !ok {
			continue
		}
		in, ok := n["inputs"].(map[string]any)
		if !ok {
			continue
		}
		for _, k := range []string{"seed", "noise_seed"} {
			if _, ok := in[k].(float64); ok {
				in[k] = float64(seed)
			}
		}
	}
	return cp
}

// watchDemo prints one status line a second until every job has ended.
func watchDemo(ctx context.Context, c *client, ids []string, out io.Writer) map[string]jobView {
	views := map[string]jobView{}
	for {
		var list struct {
			Jobs   []jobView      `json:"jobs"`
			Counts map[string]int `json:"counts"`
		}
		if err := c.do(ctx, http.MethodGet, "/v1/jobs?limit=10000", nil, &list); err == nil {
			for _, j := range list.Jobs {
				views[j.ID] = j
			}
		}
		var workers struct {
			Workers []struct {
				ID       string           `json:"id"`
				State    string           `json:"state"`
				Resident map[string]int64 `json:"resident"`
			} `json:"workers"`
		}
		_ = c.do(ctx, http.MethodGet, "/v1/workers", nil, &workers)
		counts := map[string]int{}
		ended := 0
		for _, id := range ids {
			st := views[id].State
			counts[st]++
			if views[id].terminal() {
				ended++
			}
		}
		var ws []string
		for _, w := range workers.Workers {
			ws = append(ws, fmt.Sprintf("%s:%s/%dm", w.ID, w.State, len(w.Resident)))
		}
		var running []string
		for _, id := range ids {
			if j := views[id]; j.State == "running" && j.Progress != nil {
				if j.Progress.Max > 0 {
					running = append(running, fmt.Sprintf("%s %d/%d", j.Worker, j.Progress.Value, j.Progress.Max))
				} else {
					running = append(running, fmt.Sprintf("%s %s", j.Worker, j.Progress.Phase))
				}
			}
		}
		fmt.Fprintf(out, "[%s] queued %d  running %d  done %d  failed %d | %s | %s\n", time.Now().Format("15:04:05"),
			counts["queued"], counts["running"], counts["done"], counts["failed"], strings.Join(ws, " "), strings.Join(running, ", "))
		if ended == len(ids) || ctx.Err() != nil {
			out := map[string]jobView{}
			for _, id := range ids {
				out[id] = views[id]
			}
			return out
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func printSummary(out io.Writer, views map[string]jobView, wall time.Duration, restarts int, base string) {
	byClass := map[string][]time.Duration{}
	states := map[string]int{}
	var all []time.Duration
	for _, j := range views {
		states[j.State]++
		if j.State == "done" && j.CreatedAt != nil && j.FinishedAt != nil {
			d := j.FinishedAt.Sub(*j.CreatedAt)
			byClass[j.Class] = append(byClass[j.Class], d)
			all = append(all, d)
		}
	}
	fmt.Fprintln(out, "==> summary")
	tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tJOBS DONE\tP50 LATENCY\tP95 LATENCY")
	for _, class := range []string{"interactive", "batch"} {
		ds := byClass[class]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", class, len(ds), pct(ds, 0.50), pct(ds, 0.95))
	}
	fmt.Fprintf(tw, "all\t%d\t%s\t%s\n", len(all), pct(all, 0.50), pct(all, 0.95))
	tw.Flush()
	thr := 0.0
	if wall > 0 {
		thr = float64(states["done"]) / wall.Seconds()
	}
	fmt.Fprintf(out, "jobs %d: done %d, failed %d, cancelled %d | wall %s | throughput %.2f jobs/s | worker restarts %d\n",
		len(views), states["done"], states["failed"], states["cancelled"], wall.Round(time.Millisecond), thr, restarts)
	fmt.Fprintf(out, "metrics: %s/metrics   jobs: %s/v1/jobs   (simulated GPUs: timings come from the cost model, not a GPU)\n", base, base)
}

func pct(ds []time.Duration, q float64) string {
	if len(ds) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i].Round(10 * time.Millisecond).String()
}

// scrapeMetrics reads kiln's unlabelled counters from /metrics.
func scrapeMetrics(ctx context.Context, c *client) map[string]float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}
