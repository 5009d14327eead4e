package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// ClusterConfig is a simulated cluster: Nodes nodes of the same shape
// (Node: each with its own devices, workers, VRAM, RAM and disk tiers,
// queue and dispatcher), and the routing policy (Node.Policies.Routing)
// choosing the node of every arriving job.
type ClusterConfig struct {
	Node Config
	// Nodes is the number of nodes; 1 (or 0) is the single node, which
	// RunCluster runs exactly as Run.
	Nodes int
	// NetworkDelay is the time for a job to reach the node the routing
	// policy chose (sim.network_delay): one hop, part of its latency.
	NetworkDelay time.Duration
}

// ClusterReport is the cluster's part of a report (`kiln sim --nodes N`).
type ClusterReport struct {
	Nodes         int     `json:"nodes"`
	NetworkDelayS float64 `json:"network_delay_s"`
	// Routing is the routing policy that decided ("affinity@1 (wasm)").
	Routing string `json:"routing"`
	// JobsPerNode counts the jobs routed to each node; Unrouted the jobs
	// no healthy node could hold (counted as failed).
	JobsPerNode []int `json:"jobs_per_node"`
	Unrouted    int   `json:"unrouted"`
	// ColdLoadsPerNode and GPUBusyPerNode show how the load spread.
	ColdLoadsPerNode []int64   `json:"cold_loads_per_node"`
	GPUBusyPerNode   []float64 `json:"gpu_busy_per_node"`
}

// RunCluster simulates the trace on a cluster. Every node runs the same
// decision code as Run's single node (dispatch.Core over the policy
// host's adapters); the nodes share one virtual clock and one policy host
// (one WASM build of each policy, compiled once), each with eviction
// adapters of its own (tags and ghosts are per cache). On arrival, a job
// is routed by the host's routing adapter (policy.Host.Router, the one a
// live cluster asks) from every node's view at that instant, and reaches
// the chosen node NetworkDelay later. The random word each routing
// decision carries comes from a generator seeded with opts.Seed: the same
// inputs give the same report.
//
// With one node RunCluster is Run: the report is byte for byte the one
// Run gives.
//
// # Notes
//
// The policy host's state words of scheduling, batching and balancing are
// kept per policy version (ABI section 9), so in a simulated cluster the
// nodes share them; of the built-ins only balancing's round-robin keeps
// any (its turn counter). A canary (Options.Canary) must be of routing:
// one controller judges the arms over every node (cluster_canary.go);
// watches run on one node only.
func RunCluster(ctx context.Context, cfg ClusterConfig, models []Model, trace *Trace, opts Options) (*Report, error) {
	if cfg.Nodes <= 1 {
		return Run(ctx, cfg.Node, models, trace, opts)
	}
	if opts.Watch != nil || opts.OnStart != nil {
		return nil, errors.New("sim: watches and start hooks run on one node (--nodes 1)")
	}
	if cfg.NetworkDelay < 0 {
		return nil, fmt.Errorf("sim: network delay %s is < 0", cfg.NetworkDelay)
	}
	node := cfg.Node.withDefaults()
	if err := node.Validate(); err != nil {
		return nil, err
	}
	if trace == nil || len(trace.Requests) == 0 {
		return nil, errors.New("sim: empty trace")
	}
	wall := opts.Wall
	if wall == nil {
		wall = clock.Real()
	}
	c, err := newCluster(ctx, cfg, node, models, trace, opts)
	if err != nil {
		return nil, err
	}
	defer c.host.Close()
	start := wall.Now()
	if err := c.run(ctx); err != nil {
		return nil, err
	}
	return c.report(wall.Since(start), opts.Seed), nil
}

// cluster is one cluster run's state.
type cluster struct {
	cfg    ClusterConfig
	clk    *clock.Fake
	host   *policy.Host
	router decision.Router
	nodes  []*simulator
	// jobs are every request of the trace, in arrival order; next is the
	// first not routed yet.
	jobs     []*simJob
	next     int
	rng      *rand.Rand
	routed   []int
	unrouted int
	// canary is the routing experiment (cluster_canary.go), when one runs.
	canary *canaryState
}

func newCluster(ctx context.Context, cfg ClusterConfig, node Config, models []Model, trace *Trace, opts Options) (*cluster, error) {
	c := &cluster{cfg: cfg, clk: clock.NewFake(epoch), routed: make([]int, cfg.Nodes),
		// The routing decisions' random words: seeded, so that a run
		// replays (the policies themselves have no randomness).
		rng: rand.New(rand.NewPCG(uint64(opts.Seed), 0x6b696c6e2d726f75))}
	pcfg := node.Policies
	pcfg.CallTimeout = max(pcfg.CallTimeout, simCallTimeout)
	host, err := policy.NewHost(pcfg, opts.Log, c.clk)
	if err != nil {
		return nil, fmt.Errorf("sim: policy host: %w", err)
	}
	fail := func(err error) (*cluster, error) { host.Close(); return nil, err }
	if err := host.WaitReady(ctx); err != nil {
		return fail(fmt.Errorf("sim: policy host: %w", err))
	}
	for _, m := range opts.Modules {
		if _, err := host.Load(ctx, m.Kind, m.Name, m.WASM, true, "sim"); err != nil {
			return fail(fmt.Errorf("sim: load %s policy %s: %w", m.Kind, m.Name, err))
		}
	}
	if err := applyParams(host, node.Params); err != nil {
		return fail(err)
	}
	c.host, c.router = host, host.Router()
	for range cfg.Nodes {
		s := newNodeState(node, models, c.clk, opts)
		s.host = host
		s.core = dispatch.Core{Scheduler: host.Scheduler(), Balancer: host.Balancer(), Evictor: host.NewEvictor(), Batcher: host.Batcher()}
		if node.TierEvictor == nil {
			s.disk.ev, s.ram.ev = host.NewEvictor(), host.NewEvictor()
		}
		c.nodes = append(c.nodes, s)
	}
	// Jobs are built once, by the first node (the nodes share the model
	// table and the cost model), and handed to a node when routed.
	for i := range trace.Requests {
		j, err := c.nodes[0].newJob(i, &trace.Requests[i])
		if err != nil {
			return fail(err)
		}
		c.jobs = append(c.jobs, j)
	}
	slices.SortStableFunc(c.jobs, func(a, b *simJob) int { return cmpDuration(a.req.Time, b.req.Time) })
	if opts.Canary != nil {
		if err := c.startCanary(ctx, opts.Canary, opts); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

func cmpDuration(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// run advances the cluster instant by instant: at each, the nodes with
// events due run them and a dispatch round (in node order), then the jobs
// arriving at that instant are routed from the views the nodes show after
// it, as a live router reads views the nodes published.
func (c *cluster) run(ctx context.Context) error {
	for n := 0; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		t, ok := c.nextInstant()
		if !ok {
			break
		}
		for _, s := range c.nodes {
			s.advance(t)
		}
		for _, s := range c.nodes {
			if s.events.Len() > 0 && s.events[0].at == t {
				s.step()
			}
		}
		for c.next < len(c.jobs) && c.jobs[c.next].req.Time == t {
			c.route(c.jobs[c.next])
			c.next++
		}
	}
	for _, s := range c.nodes {
		s.drain()
	}
	return nil
}

// nextInstant is the earliest time with a node event or an arrival due.
func (c *cluster) nextInstant() (time.Duration, bool) {
	t, ok := time.Duration(math.MaxInt64), false
	if c.next < len(c.jobs) {
		t, ok = c.jobs[c.next].req.Time, true
	}
	for _, s := range c.nodes {
		if s.events.Len() > 0 && s.events[0].at < t {
			t, ok = s.events[0].at, true
		}
	}
	return t, ok
}

// route asks the routing policy for j's node and sends j there.
func (c *cluster) route(j *simJob) {
	views := make([]decision.NodeView, len(c.nodes))
	for i, s := range c.nodes {
		views[i] = s.nodeView(fmt.Sprintf("node-%d", i), c.cfg.NetworkDelay)
	}
	jv := decision.JobView{ID: j.id, Class: j.req.Class, Seq: j.seq, DeadlineMS: j.req.DeadlineMS, Models: j.models,
		EstimatedVRAM: j.vram, ModelBytes: j.sizes, EstimatedCost: j.estimate, BatchKey: j.key}
	id, ok := c.router.Route(decision.RouteRequest{Job: jv, Nodes: views, Random: c.rng.Uint64()})
	k := slices.IndexFunc(views, func(v decision.NodeView) bool { return v.ID == id })
	if !ok || k < 0 {
		j.state = jobFailed
		c.unrouted++
		c.observeUnrouted(j)
		return
	}
	s := c.nodes[k]
	c.routed[k]++
	s.jobs = append(s.jobs, j)
	s.byJobID[j.id] = j
	s.incoming = append(s.incoming, j)
	s.push(event{at: j.req.Time + c.cfg.NetworkDelay, kind: evArrive, job: j})
}

// nodeView is what the node publishes for routing: its tiers' contents,
// its queue and workers, its free VRAM, its load rates (the cost model's,
// which charge every load: what a live node measures) and its backlog.
//
// Jobs routed to the node and still on their way count as queued, and
// their models as bound for its VRAM: a router remembers what it sent
// until the node's view shows it. Without that, a burst of arrivals in
// one instant all see the same views and all go to the same node.
func (s *simulator) nodeView(id string, delay time.Duration) decision.NodeView {
	v := decision.NodeView{ID: id, Healthy: true, Queued: s.queued() + len(s.incoming), Workers: len(s.workers), Delay: delay}
	var backlog time.Duration
	vram := map[string]bool{}
	for _, w := range s.workers {
		if w.batch == nil {
			v.IdleWorkers++
		} else {
			v.Running += len(w.batch)
			backlog += max(w.busyUntil-s.now, 0)
		}
		for m := range w.resident {
			vram[m] = true
		}
	}
	for _, q := range s.queues {
		for _, j := range q {
			backlog += j.estimate
		}
	}
	for _, j := range s.incoming {
		backlog += j.estimate
		for _, m := range j.models {
			vram[m] = true
		}
	}
	if v.Workers > 0 && v.IdleWorkers <= v.Queued {
		v.EstimatedWait = backlog / time.Duration(v.Workers)
	}
	var h2d float64
	for _, d := range s.devices {
		v.FreeVRAM += d.ledger.Free()
		v.UsableVRAM = max(v.UsableVRAM, d.ledger.Usable())
		bw := d.cfg.H2DBytesPerS
		if bw <= 0 {
			bw = s.cfg.Cost.H2DBytesPerS
		}
		if s.cfg.Cost.PageableFactor > 0 {
			bw *= s.cfg.Cost.PageableFactor
		}
		h2d += bw
	}
	// Rates as the cost model charges them: TimeScale stretches every
	// charged duration, so it divides the rate a node would measure.
	scale := s.cfg.Cost.TimeScale
	if scale <= 0 {
		scale = 1
	}
	rate := func(bytesPerS float64) uint64 { return uint64(max(bytesPerS/scale, 0)) }
	if len(s.devices) > 0 {
		v.H2DBytesPerS = rate(h2d / float64(len(s.devices)))
	}
	v.DiskBytesPerS, v.RemoteBytesPerS = rate(s.cfg.Cost.DiskBytesPerS), rate(s.cfg.RemoteBytesPerS)
	v.VRAM = sortedSet(vram)
	if !s.cfg.NoRAMTier {
		v.RAM = sortedKeys(s.ram.entries)
	}
	v.Disk = sortedKeys(s.disk.entries)
	return v
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// report merges the nodes into one simulator's figures and reports them
// as Run does: latencies over every job, GPU busy over every device,
// tiers, loads and the offline optimum summed over nodes (each node's own
// optimum: a load on one node does not warm another).
func (c *cluster) report(wall time.Duration, seed int64) *Report {
	first := c.nodes[0]
	agg := &simulator{cfg: first.cfg, host: c.host, sizes: first.sizes, models: first.models, parts: c.nodes,
		ram: newHostTier("ram", 0, 0, nil), disk: newHostTier("disk", 0, 0, nil)}
	agg.jobs, agg.canary = c.jobs, c.canary
	for _, s := range c.nodes {
		agg.devices = append(agg.devices, s.devices...)
		agg.workers = append(agg.workers, s.workers...)
		agg.vram = addStats(agg.vram, s.vram)
		agg.remote = addStats(agg.remote, s.remote)
		agg.ram.stats = addStats(agg.ram.stats, s.ram.stats)
		agg.disk.stats = addStats(agg.disk.stats, s.disk.stats)
		agg.coldLoads += s.coldLoads
		agg.loadTime += s.loadTime
		agg.batches += s.batches
		agg.batchedJobs += s.batchedJobs
		agg.preemptions += s.preemptions
		agg.preemptedWork += s.preemptedWork
		p := &agg.prefetch
		p.Issued += s.prefetch.Issued
		p.IssuedBytes += s.prefetch.IssuedBytes
		p.Used += s.prefetch.Used
		p.UsedBytes += s.prefetch.UsedBytes
		p.Wasted += s.prefetch.Wasted
		p.WastedBytes += s.prefetch.WastedBytes
		p.saved += s.prefetch.saved
	}
	r := agg.report(wall, seed)
	// The node section describes one node, as the config's node shape.
	var usable uint64
	for _, d := range first.devices {
		usable += d.ledger.Usable()
	}
	r.Node.Devices, r.Node.UsableVRAMBytes = len(first.devices), usable
	cr := &ClusterReport{Nodes: len(c.nodes), NetworkDelayS: secs(c.cfg.NetworkDelay), Routing: r.Policies[abi.KindRouting.String()],
		JobsPerNode: c.routed, Unrouted: c.unrouted}
	end := time.Duration(r.SimulatedS * float64(time.Second))
	for _, s := range c.nodes {
		cr.ColdLoadsPerNode = append(cr.ColdLoadsPerNode, s.coldLoads)
		busy := 0.0
		if end > 0 && len(s.devices) > 0 {
			var gpu time.Duration
			for _, d := range s.devices {
				gpu += union(d.busy)
			}
			busy = secs(gpu) / (secs(end) * float64(len(s.devices)))
		}
		cr.GPUBusyPerNode = append(cr.GPUBusyPerNode, math.Round(busy*1e4)/1e4)
	}
	r.Cluster = cr
	return r
}

func addStats(a, b TierStats) TierStats {
	a.Hits += b.Hits
	a.Misses += b.Misses
	a.Bytes += b.Bytes
	a.Evictions += b.Evictions
	a.EvictedBytes += b.EvictedBytes
	a.CapacityBytes += b.CapacityBytes
	return a
}
