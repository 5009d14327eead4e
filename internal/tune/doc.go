// Package tune searches a policy's declared tunable parameters for better
// values in the simulator, records the arrivals a live node sees so that
// the search can run on the node's own recent traffic, and, with
// tune.auto, does both by itself and canaries what wins.
//
// A policy declares its parameters with bounds (sdk/policy ABI §6). Search
// runs internal/sim on a trace once with the defaults and then, within a
// budget of simulator runs, tries seeded random points (log-uniform where a
// range spans orders of magnitude) followed by a coordinate refinement
// around the best one with halving steps. It is deterministic for a seed.
//
//	res, err := tune.Search(ctx, simCfg, models, trace, abi.KindBatching, "same-model",
//		tune.Options{Budget: 24, Seed: 1})
//	// res.Best, res.Gain (relative improvement of the objective over the defaults)
//
// The live side: a Recorder keeps a bounded ring of recent arrivals
// (persisted in the data dir); internal/api serves them as a trace CSV at
// GET /v1/experiments/trace (admin token). `kiln tune` fetches it, searches,
// and starts a canary of the best candidate through /v1/experiments.
//
// Auto is the background tuner (config section tune, autotune.Config; off
// by default). Every interval it splits the recorded arrivals in time,
// searches the active policies (and, if asked, the other built-ins) on the
// older part, validates the winner against the current setting on the
// newer part, the hold-out, with ValidateHoldout, and starts a canary
// through the experiment controller only if the winner's gain there clears
// the margin and the noise; otherwise it keeps the current settings and
// says why (Status, which internal/api serves at GET /v1/tune;
// kiln_tune_runs_total).
//
//	a, err := tune.NewAuto(tune.AutoOptions{Config: cfg.Tune, Sources: src, Clock: clk})
//	go a.Run(ctx)   // one run per cfg.Tune.Interval of clk
//	r := a.RunOnce(ctx) // r.Outcome: canary_started, kept_defaults, skipped_busy, ...
//
// # Notes
//
// A simulator search finds what is best for the trace it ran on, and a
// search over many points will find one that is best by luck. That is
// why Auto judges its winner on arrivals the search never saw, the most
// recent ones (the future, as the canary will see it), and why the gain
// must clear the spread between blocks of that hold-out and not only a
// fixed margin: the simulator is deterministic, so the only noise left is
// the traffic's. The canary that follows is what confirms it on live
// traffic. Only built-in policies can be searched offline (the simulator
// builds its policy host from built-in names).
package tune
