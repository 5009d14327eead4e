// Package experiment runs policy experiments on live traffic: canaries that
// promote a candidate policy step by step or roll it back, A/B tests by
// worker group or traffic share, and switchbacks by time window
// (DESIGN §4.7).
//
// A Router stands between the dispatcher and the policy host. With no
// experiment running it hands every decision to the active policies; while
// one runs, it splits the node between a baseline arm and a candidate arm
// (version-pinned views of the policy host, policy.Arm) and asks each
// decision of the arm it belongs to. The Controller counts every finished
// job for its arm, looks at the evidence every interval (and at once when an
// arm's policy faults), and decides with the statistics of internal/stats:
// always-valid sequential tests gate, so that looking often is safe;
// "insufficient data" holds a step and never passes it. Every decision is
// recorded with its evidence in the data dir.
//
//	rt := experiment.NewRouter(experiment.Policies{Scheduler: host.Scheduler(), ...})
//	d := dispatch.New(dispatch.Options{Scheduler: rt, Balancer: rt, Batcher: rt, Evictor: rt, ...})
//	ctl, _ := experiment.New(experiment.Options{Host: host, Router: rt, Clock: clk, DataDir: dir, ...})
//	go ctl.Run(ctx)
//	rec, err := ctl.Start(ctx, experiment.Spec{Kind: "scheduling", Policy: "edf", Type: experiment.Canary})
//
// The simulator (internal/sim) runs the same Controller and Router in virtual
// time: the controller reads time only from its clock and looks when Tick is
// called.
package experiment
