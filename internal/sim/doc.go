// Package sim replays a trace of requests through the kernel's own
// dispatch decisions in virtual time.
//
// A run builds a policy.Host (the same built-ins, WASM or native, that a
// live node runs) on a fake clock, one device.Ledger per simulated device
// and two host tiers (L2 RAM and L3 disk, bounded and evicting through a
// decision.Evictor as internal/tier does). Jobs arrive from the trace; whenever a
// worker is idle and jobs are queued, the live dispatcher's decision core
// (dispatch.Core) picks the job, its worker and its batch, reserves its
// models on the device's ledger (asking the evictor for victims when the
// ledger refuses, never evicting a model a running job pins) and names the
// models the lookahead pulls toward RAM (those the eviction policy chooses
// to prefetch into the RAM tier's room, as live). With dispatch.preemption
// on, a scheduling policy's planned preemptions (dispatch.Core.Preempt) are
// carried out as live: the stopped job goes back to its place in the queue
// and starts over. Load time is charged from the tier
// that held the bytes and compute time from the cost model (internal/cost,
// shared with kiln-worker-sim). The event loop stands in for the
// dispatcher's goroutines, the worker IPC and the bbolt queue; see
// RATIONALE.md and docs/simulator.md.
//
//	models, _ := sim.ReadModels(mf, "models.csv")
//	trace, _ := sim.ReadTrace(tf, sim.TraceOptions{File: "trace.csv", Models: models})
//	rep, err := sim.Run(ctx, node.SimConfig(cfg), models, trace, sim.Options{Seed: 1})
//	_ = rep.WriteMarkdown(os.Stdout)
//
// Workloads come from Generate (zipf with drift, bursty on/off, diurnal),
// ImportServeGen (Alibaba ServeGen client rate windows, clients mapped onto
// models by stripe or block) and ImportAzure (the Azure LLM trace's
// arrival times), with realistic model sizes (Catalog). Bench runs the
// suite of `make bench-sim` against the baselines in configs/.
package sim
