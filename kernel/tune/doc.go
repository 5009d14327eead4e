// Package tune searches a policy's declared tunable parameters for better
// values in the simulator, and records the arrivals a live node sees so
// that the search can run on the node's own recent traffic.
//
// A policy declares its parameters with bounds (sdk/policy ABI §6). Search
// runs kernel/sim on a trace once with the defaults and then, within a
// budget of simulator runs, tries seeded random points (log-uniform where a
// range spans orders of magnitude) followed by a coordinate refinement
// around the best one with halving steps. It is deterministic for a seed.
//
//	res, err := tune.Search(ctx, simCfg, models, trace, abi.KindBatching, "same-model",
//		tune.Options{Budget: 24, Seed: 1})
//	// res.Best, res.Gain (relative improvement of the objective over the defaults)
//
// The live side: a Recorder keeps a bounded ring of recent arrivals
// (persisted in the data dir), served as a trace CSV by
// GET /v1/experiments/trace (admin token). `kiln tune` fetches it, searches,
// and starts a canary of the best candidate through /v1/experiments.
//
// # Notes
//
// A simulator search finds what is best for the trace it ran on; the
// canary that follows is what confirms it on live traffic. Only built-in
// policies can be searched offline (the simulator builds its policy host
// from built-in names).
package tune
