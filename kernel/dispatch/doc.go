// Package dispatch moves jobs from the durable queue onto workers.
//
// Every choice is asked of a policy behind a small interface — Scheduler
// (which queued job next), Balancer (which idle worker), Evictor (which
// resident models to unload when a device's VRAM ledger is full) — so that
// the native implementations here (PriorityFIFO, LeastLoaded, LRU) and the
// WASM policies of kernel/policy are interchangeable. The dispatcher itself
// owns only mechanics: VRAM reservations before loads (a load that cannot fit
// is never started), pinning models while a job uses them, loading a job's
// models in parallel, and recording every outcome in the store:
//
//   - done: the worker returned a result;
//   - failed: the graph itself failed, or the job can never fit;
//   - queued again: the worker died or lost a model (attempts are counted
//     by the store, which fails the job after max_attempts);
//   - cancelled: DELETE /v1/jobs/{id}; the worker is told to stop.
//
// Live observers subscribe to job events (Subscribe); the store stays the
// source of truth.
//
//	d := dispatch.New(dispatch.Options{Store: s, Devices: set, Catalog: c})
//	pool, _ := worker.NewPool(cfg, worker.PoolOptions{OnReady: d.OnWorkerReady, OnExit: d.OnWorkerExit, ...})
//	d.SetPool(pool)
//	go d.Run(ctx)
package dispatch
