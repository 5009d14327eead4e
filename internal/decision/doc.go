// Package decision is kiln's decision contract: what a policy sees (the
// views of queued and running jobs, workers, cached models and cluster
// nodes) and the five questions the kernel asks of it (Scheduler, Balancer,
// Batcher, Evictor, Router, with the optional Planner and Prefetcher).
//
// It sits at the bottom of the import graph on purpose. The dispatcher
// (internal/dispatch) and the tiers (internal/tier) ask the questions; the
// policy host (internal/policy) answers them, converting these views to the
// ABI's bytes in one place (internal/policy/adapters.go, routing.go); the
// experiment router (internal/experiment) splits them between arms; the
// simulator (internal/sim) and the cluster (internal/cluster) build the same
// views from their own state. None of them needs to import another to
// speak the contract, and adding an input a policy can see starts here
// (docs/ARCHITECTURE.md, "How to add an input that placement can see").
//
// The package holds types and pure helpers only: no policy, no state, no
// goroutine. The policies themselves are written once in policies/ and
// reach the kernel through internal/policy, as WASM modules or as their
// native builds.
package decision
