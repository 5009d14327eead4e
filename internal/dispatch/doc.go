// Package dispatch moves jobs from the durable queue onto workers.
//
// Every choice is asked of a policy through the decision contract
// (internal/decision) — Scheduler (which queued job next), Balancer (which
// idle worker), Evictor (which resident models to unload when a device's
// VRAM ledger is full), Batcher (which queued jobs run with the chosen
// one). The policies are the policy host's (internal/policy): a WASM module,
// or the native build of the same built-in source; a policy left nil in
// Options is the native build of the fallback built-in (policy.Native).
// The package holds no policy of its own. The dispatcher itself
// owns only mechanics: VRAM reservations before loads (a load that cannot fit
// is never started), pinning models while a job uses them, loading a job's
// models in parallel, and recording every outcome in the store:
//
//   - done: the worker returned a result;
//   - failed: the graph itself failed, or the job can never fit;
//   - queued again: the worker died or lost a model (attempts are counted
//     by the store, which fails the job after max_attempts);
//   - cancelled: DELETE /v1/jobs/{id}; the worker is told to stop;
//   - preempted: a scheduler that is a Planner asked for the worker for a
//     waiting job of a higher class (Options.Preemption); the worker is
//     told to stop and the job goes back to the queue at its place, the
//     attempt not counted against it (job.Store.Preempt).
//
// Two optional interfaces extend the policies, found by type assertion:
// a Scheduler that is a Planner may name running jobs to preempt, and an
// Evictor that is a Prefetcher chooses which of the queue head's models
// the lookahead pulls up the tiers. The dispatcher bounds what a plan may
// do (Core.Preempt): only when no worker is idle, only a job of a lower
// class that has run for Options.PreemptMinRun, one at a time.
//
// The decisions themselves (choose a job, its worker and its batch; make
// room on a device's ledger; pick the models to pull up the tiers; pick a
// job to preempt) live in Core, which has no goroutines or clock of its
// own: the Dispatcher calls it from its loop and the simulator (internal/sim)
// from its event loop (which does not preempt). Jobs that a Batcher groups
// with a lead (same BatchKey) run right after it on the same worker with
// the models kept warm, since worker protocol v1 runs one job per run
// message.
//
// Live observers subscribe to job events (Subscribe); the store stays the
// source of truth.
//
//	d := dispatch.New(dispatch.Options{Store: s, Devices: set, Catalog: c})
//	pool, _ := worker.NewPool(cfg, worker.PoolOptions{OnReady: d.OnWorkerReady, OnExit: d.OnWorkerExit, ...})
//	d.SetPool(pool)
//	go d.Run(ctx)
package dispatch
