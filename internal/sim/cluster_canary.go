package sim

import (
	"context"
	"fmt"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// startCanary runs a routing experiment on the cluster: one experiment
// controller for every node, its router's split (experiment.RouteSplit)
// in front of the routing policy, so that each arm routes its own jobs
// over the whole cluster and every finished job, on whichever node, counts
// for the arm that routed it. Experiments of the other kinds split one
// node's decisions and run with --nodes 1.
func (c *cluster) startCanary(ctx context.Context, cn *Canary, opts Options) error {
	spec := cn.Spec
	if k, err := abi.ParseKind(spec.Kind); err != nil || k != abi.KindRouting {
		return fmt.Errorf("sim: a %s experiment splits one node's decisions: run it with --nodes 1 (a cluster runs routing experiments)", spec.Kind)
	}
	if spec.Type == "" {
		spec.Type = experiment.Canary
	}
	if spec.Seed == 0 {
		spec.Seed = cn.Seed | 1
	}
	if spec.Unit == "" && spec.Type != experiment.Switchback {
		// The randomisation unit of routing is the job.
		spec.Unit = experiment.Traffic
	}
	// The router's own scheduling, balancing, batching and eviction are
	// never asked: the nodes keep theirs.
	rt := experiment.NewRouter(experiment.Policies{})
	ctl, err := experiment.New(experiment.Options{Config: cn.Config, Host: c.host, Router: rt, Clock: c.clk, Seed: cn.Seed, Log: opts.Log})
	if err != nil {
		return fmt.Errorf("sim: routing experiment: %w", err)
	}
	rec, err := ctl.Start(ctx, spec)
	if err != nil {
		return fmt.Errorf("sim: routing experiment: %w", err)
	}
	c.router = rt.RouteSplit(c.host.Router())
	c.canary = &canaryState{ctl: ctl, id: rec.ID}
	for _, s := range c.nodes {
		s.canary = c.canary // each node counts its finished jobs and lets the controller look
	}
	return nil
}

// observeUnrouted counts a job no node could take as failed for the arm
// that routed it.
func (c *cluster) observeUnrouted(j *simJob) {
	if c.canary == nil {
		return
	}
	c.canary.ctl.Observe(experiment.Observation{JobID: j.id, Failed: true, HasDeadline: j.req.DeadlineMS > 0,
		Interactive: j.req.Class == job.Interactive})
}
