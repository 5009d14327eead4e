// Package sim replays a trace of requests against the kernel's own
// scheduling, placement and eviction code in virtual time.
//
// A run builds a policy.Host (the same built-ins, WASM or native, that a
// live node runs) on a fake clock, one device.Ledger per simulated device
// and two host tiers (L2 RAM and L3 disk, byte-bounded LRU). Jobs arrive
// from the trace; whenever a worker is idle and jobs are queued the
// scheduler picks a job and the balancer its worker, the job's models are
// reserved on the device's ledger (asking the evictor for victims when the
// ledger refuses, never evicting a model a running job pins), load time is
// charged from the tier that held the bytes and compute time from the cost
// model (kernel/cost, shared with kiln-worker-sim). The event loop stands in
// for the dispatcher's goroutines, the worker IPC and the bbolt queue; see
// RATIONALE.md and docs/simulator.md.
//
//	models, _ := sim.ReadModels(mf, "models.csv")
//	trace, _ := sim.ReadTrace(tf, sim.TraceOptions{File: "trace.csv", Models: models})
//	rep, err := sim.Run(ctx, sim.FromKernelConfig(cfg), models, trace, sim.Options{Seed: 1})
//	_ = rep.WriteMarkdown(os.Stdout)
//
// Workloads come from Generate (zipf, bursty, diurnal) with realistic model
// sizes (modelfile.NominalSize).
package sim
