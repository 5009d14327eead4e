// Package policy is kiln's policy host: it runs the eviction, scheduling,
// batching and load-balancing policies as sandboxed WebAssembly modules
// (wazero) and lets operators swap them while the node serves.
//
// A policy module speaks the ABI in sdk/policy/ABI.md. Loading one compiles
// it (with a compilation cache), checks its ABI marker, hook signatures and
// imports before any instance exists, instantiates a pool of instances and
// self-tests it on sample snapshots; only then can it become active, by an
// atomic swap. Every decision runs under a deadline (instrumented loop
// heads and one watchdog goroutine: nothing per call; see instrument.go)
// and a memory cap. A
// trap, timeout, error status or invalid answer discards the instance,
// answers with the kernel's native policy of the same kind and counts a
// fault; MaxFaults faults within FaultWindow roll the kind back to the
// policy that was active before.
//
// The Host's Scheduler, Balancer, Evictor and Batcher implement the
// dispatch interfaces and always ask the kind's active policy:
//
//	h, err := policy.NewHost(cfg.Policies, log, clk)
//	defer h.Close()
//	d := dispatch.New(dispatch.Options{Scheduler: h.Scheduler(), Balancer: h.Balancer(), Evictor: h.Evictor(), ...})
//	vi, err := h.Load(ctx, abi.KindEviction, "mine", wasm, true, "why") // what POST /v1/policies/eviction does (internal/api)
//	tiers, _ := tier.New(cfg, res, tier.Options{DiskEvictor: h.NewEvictor(), RAMEvictor: h.NewEvictor()}) // one evictor per cache
//	registry.MustRegister(h.Collector())               // kiln_policy_* metrics
//
// With Config.StateDir set, loaded modules, active choices, rollback stacks,
// parameters and history survive a restart (persist.go).
//
// Built-in policies (policies/<kind>/<name>) are embedded as WASM when
// `make policies` built them; a missing module means the native build of
// the same source serves.
package policy
