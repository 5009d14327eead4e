package sim

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/device"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Report is the outcome of a run. Times are in seconds of virtual time
// unless named wall_*; its JSON form is `kiln sim --report json`.
type Report struct {
	// Jobs counts the trace's requests; Completed and Failed split them
	// (failed: no device could ever hold the job's models).
	Jobs      int `json:"jobs"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	// Latency is arrival to completion; QueueWait arrival to start; Load
	// the job's model loads (part of its latency).
	P50LatencyS   float64 `json:"p50_latency_s"`
	P95LatencyS   float64 `json:"p95_latency_s"`
	P99LatencyS   float64 `json:"p99_latency_s"`
	MeanLatencyS  float64 `json:"mean_latency_s"`
	P50QueueWaitS float64 `json:"p50_queue_wait_s"`
	P95QueueWaitS float64 `json:"p95_queue_wait_s"`
	MeanLoadS     float64 `json:"mean_load_s"`
	// PerClass holds the same figures per job class.
	PerClass map[string]ClassReport `json:"per_class"`
	// SLOAttainment is the fraction of completed jobs with a deadline that
	// met it (failed jobs with a deadline count as misses); SLOJobs counts
	// the jobs with a deadline. Jobs without one are excluded.
	SLOAttainment float64 `json:"slo_attainment"`
	SLOJobs       int     `json:"slo_jobs"`
	// SimulatedS is the makespan: trace start to the last completion.
	SimulatedS         float64 `json:"simulated_s"`
	ThroughputJobsPerS float64 `json:"throughput_jobs_per_s"`
	// GPUBusy is the fraction of device time spent computing (union over
	// a device's workers, averaged over devices). WorkerBusy is the
	// fraction of worker time spent loading or computing.
	GPUBusy    float64 `json:"gpu_busy"`
	WorkerBusy float64 `json:"worker_busy"`
	// Tiers: vram (L1, per worker), ram (L2), disk (L3), remote (L4: hits
	// are fetches from the source).
	Tiers map[string]TierStats `json:"tiers"`
	// ColdLoads counts model loads into VRAM; JobsWithLoads the jobs that
	// waited for at least one.
	ColdLoads     int64 `json:"cold_loads"`
	JobsWithLoads int   `json:"jobs_with_loads"`
	// TotalLoadTimeS is the sum of all load times charged; OptimalLoadTimeS
	// the offline reference's (OptimumVariant) on the same request sequence
	// and capacities.
	TotalLoadTimeS   float64 `json:"total_load_time_s"`
	OptimalLoadTimeS float64 `json:"optimal_load_time_s"`
	OptimalVariant   string  `json:"optimal_variant"`
	// OptimalSharedLoadTimeS is the same replay with one copy of a model
	// per device (SharedOptimumVariant); it equals OptimalLoadTimeS with
	// one worker per device.
	OptimalSharedLoadTimeS float64 `json:"optimal_shared_load_time_s"`
	// OptimalVRAMLoadTimeS is the replay with a RAM tier that holds every
	// model (InfiniteRAMOptimumVariant): what optimal_load_time_s was
	// before the optimum modelled the host tiers. TotalLoadTimeS over it
	// judges the VRAM eviction alone, over OptimalLoadTimeS every tier.
	OptimalVRAMLoadTimeS float64 `json:"optimal_vram_load_time_s"`
	// LoadTimeVsOptimum is TotalLoadTimeS / OptimalLoadTimeS (0 when the
	// optimum is 0).
	LoadTimeVsOptimum float64 `json:"load_time_vs_optimum"`
	// SimSpeedup is simulated seconds per wall second (0 when the wall
	// clock did not move, as with a fake clock in tests).
	SimSpeedup float64 `json:"sim_speedup"`
	WallS      float64 `json:"wall_s"`
	// Policies is the active policy per kind, e.g. "lru@1 (native)".
	Policies map[string]string `json:"policies"`
	// PolicyFaults counts, per policy version ("kind.name@N") that faulted,
	// its faults by reason (internal/policy: trap, timeout, invalid,
	// error_status, stall); PolicyRollbacks lists the automatic rollbacks
	// the fault counter made. Both are empty for a run without faults.
	PolicyFaults    map[string]map[string]int64 `json:"policy_faults,omitempty"`
	PolicyRollbacks []string                    `json:"policy_rollbacks,omitempty"`
	// Batching counts the batches the batching policy formed.
	Batching BatchReport `json:"batching"`
	// Preemptions counts running jobs stopped for a waiting job of a
	// higher class (dispatch.preemption); PreemptedWorkS is the worker
	// time their stopped attempts had taken, thrown away (it counts in
	// worker_busy).
	Preemptions    int     `json:"preemptions"`
	PreemptedWorkS float64 `json:"preempted_work_s"`
	// Prefetch is the lookahead's outcome; nil when lookahead is off.
	Prefetch *PrefetchReport `json:"prefetch,omitempty"`
	// Predict is the predictor's warming; nil when it is off.
	Predict *PredictReport `json:"predict,omitempty"`
	// Node describes the simulated hardware.
	Node NodeReport `json:"node"`
	// ModelSizes is the model table the run used.
	ModelSizes []Model `json:"model_sizes"`
	Seed       int64   `json:"seed"`
	// Canary is the outcome of Options.Canary.
	Canary *CanaryReport `json:"canary,omitempty"`
	// Watch is the outcome of Options.Watch.
	Watch *WatchReport `json:"watch,omitempty"`
	// Cluster describes a simulated cluster (RunCluster with more than one
	// node): every figure above is then the cluster's, over all its jobs
	// and devices, and Node is the shape of one node.
	Cluster *ClusterReport `json:"cluster,omitempty"`
}

// BatchReport describes batching in a run.
type BatchReport struct {
	// Batches counts dispatches of more than one job; BatchedJobs the jobs
	// in them. Execution is fused or sequential (Config.BatchExecution).
	Batches     int    `json:"batches"`
	BatchedJobs int    `json:"batched_jobs"`
	Execution   string `json:"execution"`
}

// PrefetchReport is what the lookahead did: models it started pulling up
// to the RAM tier (Issued), those a job then loaded from there or from the
// transfer in flight (Used), and those evicted from RAM, or left at the
// end, before any job used them (Wasted). LoadTimeSavedS is the load time
// the used ones saved: what the loads would have cost from the tier the
// model was in when the lookahead started, minus what they cost.
type PrefetchReport struct {
	Issued         int64   `json:"issued"`
	IssuedBytes    int64   `json:"issued_bytes"`
	Used           int64   `json:"used"`
	UsedBytes      int64   `json:"used_bytes"`
	Wasted         int64   `json:"wasted"`
	WastedBytes    int64   `json:"wasted_bytes"`
	LoadTimeSavedS float64 `json:"load_time_saved_s"`

	saved time.Duration
}

// ClassReport is the per-class part of a report.
type ClassReport struct {
	Jobs          int     `json:"jobs"`
	P50LatencyS   float64 `json:"p50_latency_s"`
	P95LatencyS   float64 `json:"p95_latency_s"`
	P99LatencyS   float64 `json:"p99_latency_s"`
	SLOAttainment float64 `json:"slo_attainment"`
	SLOJobs       int     `json:"slo_jobs"`
}

// NodeReport describes the simulated node.
type NodeReport struct {
	Devices          int     `json:"devices"`
	WorkersPerDevice int     `json:"workers_per_device"`
	UsableVRAMBytes  uint64  `json:"usable_vram_bytes"`
	RAMBytes         int64   `json:"ram_bytes"`
	DiskBytes        int64   `json:"disk_bytes"`
	DiskBytesPerS    float64 `json:"disk_bytes_per_s"`
	RemoteBytesPerS  float64 `json:"remote_bytes_per_s"`
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func secs(d time.Duration) float64 { return d.Seconds() }

func (s *simulator) report(wall time.Duration, seed int64) *Report {
	r := &Report{Jobs: len(s.jobs), PerClass: map[string]ClassReport{}, Seed: seed,
		OptimalVariant: OptimumVariant, ModelSizes: s.sizes, Policies: map[string]string{}}
	type acc struct {
		lat           []float64
		slo, sloMet   int
		jobs          int
		wait          []float64
		load, latency float64
	}
	all := &acc{}
	classes := map[string]*acc{}
	var end time.Duration
	for _, j := range s.jobs {
		c := classes[string(j.req.Class)]
		if c == nil {
			c = &acc{}
			classes[string(j.req.Class)] = c
		}
		for _, a := range []*acc{all, c} {
			a.jobs++
			if j.req.DeadlineMS > 0 {
				a.slo++
			}
		}
		if j.state != jobDone {
			r.Failed++
			continue
		}
		r.Completed++
		end = max(end, j.done)
		lat := secs(j.done - j.req.Time)
		met := j.req.DeadlineMS > 0 && (j.done-j.req.Time) <= time.Duration(j.req.DeadlineMS)*time.Millisecond
		if j.loads > 0 {
			r.JobsWithLoads++
		}
		for _, a := range []*acc{all, c} {
			a.lat = append(a.lat, lat)
			a.wait = append(a.wait, secs(j.start-j.req.Time))
			a.load += secs(j.load)
			a.latency += lat
			if met {
				a.sloMet++
			}
		}
	}
	ratio := func(a, b int) float64 {
		if b == 0 {
			return 0
		}
		return float64(a) / float64(b)
	}
	sort.Float64s(all.lat)
	sort.Float64s(all.wait)
	r.P50LatencyS, r.P95LatencyS, r.P99LatencyS = percentile(all.lat, 50), percentile(all.lat, 95), percentile(all.lat, 99)
	r.P50QueueWaitS, r.P95QueueWaitS = percentile(all.wait, 50), percentile(all.wait, 95)
	if r.Completed > 0 {
		r.MeanLatencyS = all.latency / float64(r.Completed)
		r.MeanLoadS = all.load / float64(r.Completed)
	}
	r.SLOJobs, r.SLOAttainment = all.slo, ratio(all.sloMet, all.slo)
	for name, c := range classes {
		sort.Float64s(c.lat)
		r.PerClass[name] = ClassReport{Jobs: c.jobs, P50LatencyS: percentile(c.lat, 50), P95LatencyS: percentile(c.lat, 95),
			P99LatencyS: percentile(c.lat, 99), SLOAttainment: ratio(c.sloMet, c.slo), SLOJobs: c.slo}
	}
	r.SimulatedS = secs(end)
	if end > 0 {
		r.ThroughputJobsPerS = float64(r.Completed) / secs(end)
		var gpu time.Duration
		worker := s.preemptedWork
		for _, d := range s.devices {
			gpu += union(d.busy)
		}
		for _, j := range s.jobs {
			if j.state == jobDone {
				// A fused batch shares one run: count it once.
				worker += (j.done - j.start) / time.Duration(max(1, j.shared))
			}
		}
		r.GPUBusy = secs(gpu) / (secs(end) * float64(len(s.devices)))
		r.WorkerBusy = secs(worker) / (secs(end) * float64(len(s.workers)))
	}
	var usable uint64
	for _, d := range s.devices {
		usable += d.ledger.Usable()
	}
	vram := s.vram
	vram.CapacityBytes = int64(usable)
	r.Tiers = map[string]TierStats{"vram": vram, "ram": s.ram.stats, "disk": s.disk.stats, "remote": s.remote}
	r.ColdLoads = s.coldLoads
	r.TotalLoadTimeS = secs(s.loadTime)
	r.OptimalLoadTimeS = secs(s.optimalLoadTime(true, false))
	r.OptimalSharedLoadTimeS = secs(s.optimalLoadTime(false, false))
	r.OptimalVRAMLoadTimeS = secs(s.optimalLoadTime(true, true))
	if r.OptimalLoadTimeS > 0 {
		r.LoadTimeVsOptimum = r.TotalLoadTimeS / r.OptimalLoadTimeS
	}
	r.WallS = wall.Seconds()
	if wall > 0 {
		r.SimSpeedup = r.SimulatedS / wall.Seconds()
	}
	for _, k := range s.host.List() {
		if k.Kind == abi.KindRouting.String() && s.parts == nil {
			// One node routes nothing: its report names the policies
			// that decided, as before the routing kind.
			continue
		}
		desc := k.Active
		for _, v := range k.Versions {
			if v.Active {
				desc += " (" + v.Source + ")"
			}
		}
		r.Policies[k.Kind] = desc
		for _, v := range k.Versions {
			if len(v.FaultsBy) > 0 {
				if r.PolicyFaults == nil {
					r.PolicyFaults = map[string]map[string]int64{}
				}
				r.PolicyFaults[fmt.Sprintf("%s.%s@%d", k.Kind, v.Name, v.Version)] = v.FaultsBy
			}
		}
		for _, c := range k.Changes {
			if c.Action == "auto-rollback" {
				r.PolicyRollbacks = append(r.PolicyRollbacks, fmt.Sprintf("%s: rolled back from %s to %s: %s", k.Kind, c.From, c.To, c.Reason))
			}
		}
	}
	r.Batching = BatchReport{Batches: s.batches, BatchedJobs: s.batchedJobs, Execution: s.cfg.BatchExecution}
	r.Preemptions, r.PreemptedWorkS = s.preemptions, secs(s.preemptedWork)
	r.Canary = s.canaryReport()
	r.Watch = s.watchReport()
	r.Predict = s.predictReport()
	if s.cfg.LookaheadJobs > 0 && !s.cfg.NoRAMTier {
		p := s.prefetch
		p.LoadTimeSavedS = secs(p.saved)
		r.Prefetch = &p
	}
	r.Node = NodeReport{Devices: len(s.devices), WorkersPerDevice: s.cfg.WorkersPerDevice, UsableVRAMBytes: usable,
		RAMBytes: s.cfg.RAMBytes, DiskBytes: s.cfg.DiskBytes, DiskBytesPerS: s.cfg.Cost.DiskBytesPerS,
		RemoteBytesPerS: s.cfg.RemoteBytesPerS}
	return r
}

// union is the total length of intervals sorted by start.
func union(iv []interval) time.Duration {
	if len(iv) == 0 {
		return 0
	}
	iv = append([]interval(nil), iv...)
	sort.Slice(iv, func(a, b int) bool { return iv[a].from < iv[b].from })
	var total time.Duration
	cur := iv[0]
	for _, x := range iv[1:] {
		if x.from > cur.to {
			total += cur.to - cur.from
			cur = x
			continue
		}
		cur.to = max(cur.to, x.to)
	}
	return total + cur.to - cur.from
}

// WriteMarkdown writes the report as markdown tables.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	f := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	f("# kiln sim report\n\n")
	f("| metric | value |\n|---|---|\n")
	f("| jobs | %d (completed %d, failed %d) |\n", r.Jobs, r.Completed, r.Failed)
	f("| p50 / p95 / p99 latency | %.3f / %.3f / %.3f s |\n", r.P50LatencyS, r.P95LatencyS, r.P99LatencyS)
	f("| mean latency | %.3f s |\n", r.MeanLatencyS)
	f("| p50 / p95 queue wait | %.3f / %.3f s |\n", r.P50QueueWaitS, r.P95QueueWaitS)
	f("| mean load per job | %.3f s |\n", r.MeanLoadS)
	f("| SLO attainment | %.4f (%d jobs with a deadline) |\n", r.SLOAttainment, r.SLOJobs)
	f("| throughput | %.4f jobs/s |\n", r.ThroughputJobsPerS)
	f("| simulated time | %.1f s |\n", r.SimulatedS)
	f("| GPU busy / worker busy | %.4f / %.4f |\n", r.GPUBusy, r.WorkerBusy)
	f("| cold loads | %d (%d jobs waited for a load) |\n", r.ColdLoads, r.JobsWithLoads)
	f("| total load time | %.1f s |\n", r.TotalLoadTimeS)
	f("| optimal load time | %.1f s (one copy per device: %.1f s; with an unbounded RAM tier: %.1f s) |\n", r.OptimalLoadTimeS, r.OptimalSharedLoadTimeS, r.OptimalVRAMLoadTimeS)
	f("| load time / optimum | %.3f |\n", r.LoadTimeVsOptimum)
	f("| batches | %d (%d jobs, %s) |\n", r.Batching.Batches, r.Batching.BatchedJobs, r.Batching.Execution)
	f("| preemptions | %d (%.1f s of work lost) |\n", r.Preemptions, r.PreemptedWorkS)
	if p := r.Prefetch; p != nil {
		f("| prefetch issued / used / wasted | %d (%s) / %d (%s) / %d (%s) |\n", p.Issued, device.FormatBytes(uint64(p.IssuedBytes)),
			p.Used, device.FormatBytes(uint64(p.UsedBytes)), p.Wasted, device.FormatBytes(uint64(p.WastedBytes)))
		f("| prefetch load time saved | %.1f s |\n", p.LoadTimeSavedS)
	}
	if p := r.Predict; p != nil {
		f("| predictor warmed / used / wasted | %d (%s) / %d (%s) / %d (%s), hit ratio %.2f |\n", p.Warmed, device.FormatBytes(uint64(p.WarmedBytes)),
			p.Used, device.FormatBytes(uint64(p.UsedBytes)), p.Wasted, device.FormatBytes(uint64(p.WastedBytes)), p.HitRatio)
	}
	f("| sim speedup | %.0fx (wall %.3f s) |\n", r.SimSpeedup, r.WallS)
	f("| seed | %d |\n\n", r.Seed)
	f("Optimum: %s.\n\n", r.OptimalVariant)

	f("## Per class\n\n| class | jobs | p50 s | p95 s | p99 s | SLO attainment | with deadline |\n|---|---|---|---|---|---|---|\n")
	for _, name := range sortedKeys(r.PerClass) {
		c := r.PerClass[name]
		f("| %s | %d | %.3f | %.3f | %.3f | %.4f | %d |\n", name, c.Jobs, c.P50LatencyS, c.P95LatencyS, c.P99LatencyS, c.SLOAttainment, c.SLOJobs)
	}
	f("\n## Tiers\n\n| tier | capacity | hits | misses | hit ratio | bytes served | evictions | evicted |\n|---|---|---|---|---|---|---|---|\n")
	for _, name := range []string{"vram", "ram", "disk", "remote"} {
		t := r.Tiers[name]
		f("| %s | %s | %d | %d | %.4f | %s | %d | %s |\n", name, device.FormatBytes(uint64(t.CapacityBytes)), t.Hits, t.Misses,
			t.HitRatio(), device.FormatBytes(uint64(t.Bytes)), t.Evictions, device.FormatBytes(uint64(t.EvictedBytes)))
	}
	f("\n## Policies\n\n| kind | active |\n|---|---|\n")
	for _, k := range sortedKeys(r.Policies) {
		f("| %s | %s |\n", k, r.Policies[k])
	}
	f("\n## Node\n\n| devices | workers/device | usable VRAM | RAM (L2) | disk (L3) | disk read | remote read |\n|---|---|---|---|---|---|---|\n")
	n := r.Node
	f("| %d | %d | %s | %s | %s | %.2f GB/s | %.2f GB/s |\n", n.Devices, n.WorkersPerDevice, device.FormatBytes(n.UsableVRAMBytes),
		device.FormatBytes(uint64(n.RAMBytes)), device.FormatBytes(uint64(n.DiskBytes)), n.DiskBytesPerS/1e9, n.RemoteBytesPerS/1e9)
	f("\n## Model sizes\n\n| model | family | bytes |\n|---|---|---|\n")
	for _, m := range r.ModelSizes {
		f("| %s | %s | %d (%s) |\n", m.ID, m.Family, m.Bytes, device.FormatBytes(uint64(m.Bytes)))
	}
	if c := r.Cluster; c != nil {
		f("\n## Cluster\n\n| nodes | routing | network delay | unrouted |\n|---|---|---|---|\n")
		f("| %d | %s | %.3f s | %d |\n", c.Nodes, c.Routing, c.NetworkDelayS, c.Unrouted)
		f("\n| node | jobs | cold loads | GPU busy |\n|---|---|---|---|\n")
		for i := range c.JobsPerNode {
			f("| node-%d | %d | %d | %.4f |\n", i, c.JobsPerNode[i], c.ColdLoadsPerNode[i], c.GPUBusyPerNode[i])
		}
	}
	writeCanaryMarkdown(&b, r.Canary)
	writeWatchMarkdown(&b, r.Watch)
	_, err := io.WriteString(w, b.String())
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
