package experiment

import (
	"errors"
	"fmt"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Routing experiments. A routing policy decides once per job, at the
// cluster's entry, which node runs it; the unit of randomisation is
// therefore the job: each arm routes its own jobs (assigned as every other
// kind's traffic split assigns them: stratified by class and models,
// balanced on work, deterministic given the seed) over the whole cluster,
// and a finished job counts for the arm that routed it, whichever node and
// worker ran it. A switchback routes every job of a window by the
// window's arm. The nodes' own decisions (scheduling, balancing, ...) stay
// the active policies' and are shared by both arms' jobs, as a traffic
// split on one node shares its workers.
//
// In the simulated cluster (internal/sim RunCluster) one controller serves
// every node. In a live cluster the experiment runs on the node it was
// started on, which judges it; the other nodes follow it (follow.go): each
// node routes the jobs submitted to it through RouteSplit (the cluster's
// Local.Router), tags their records with the arm (Router.Tag), and the
// running node counts each tagged job when the cluster's registry says it
// ended, on whichever node (ObserveClusterTagged). A single node refuses
// routing experiments (CheckLive).

// RouteSplit is the router a cluster asks for placements while an
// experiment may run: base (the active routing policy) outside a routing
// experiment, else the arm of each job. It reads the Router's current
// split, so experiments start and end under it as under the dispatcher.
func (rt *Router) RouteSplit(base decision.Router) decision.Router {
	return routeSplit{rt: rt, base: base}
}

type routeSplit struct {
	rt   *Router
	base decision.Router
}

var _ decision.Router = routeSplit{}

// Route implements decision.Router.
func (s routeSplit) Route(req decision.RouteRequest) (string, bool) {
	r := s.rt.cur.Load()
	if r == nil || r.kind != abi.KindRouting {
		return s.base.Route(req)
	}
	var arm, win int
	var burn bool
	if r.typ == Switchback {
		win, arm, burn = r.windowAt(r.now())
		r.mu.Lock()
		if len(r.placed) > 1<<16 {
			clear(r.placed) // jobs that never finished must not grow it without bound
		}
		r.placed[req.Job.ID] = placement{arm: arm, window: win, discard: burn}
		r.mu.Unlock()
	} else {
		arm = r.jobArm(&req.Job)
	}
	router := s.base
	if arm != Production {
		router = r.arms[arm].Router()
	}
	node, ok := router.Route(req)
	r.checkFault(arm)
	r.dispatched[arm].Add(1)
	return node, ok
}

// nodeSplit is the split of the node's own decisions (scheduling,
// balancing, batching, preemption): nil outside an experiment and during
// a routing experiment, whose arms split the cluster's jobs, not the
// node's.
func (rt *Router) nodeSplit() *routing {
	if r := rt.cur.Load(); r != nil && r.kind != abi.KindRouting {
		return r
	}
	return nil
}

// routingExperiment reports whether a routing experiment runs.
func (rt *Router) routingExperiment() bool {
	r := rt.cur.Load()
	return r != nil && r.kind == abi.KindRouting
}

// ObserveCluster counts a job of the cluster's registry that ended, on
// whichever node, for the arm of a routing experiment that routed it (a
// job this node did not route counts for nothing). Its latency runs from
// the cluster's submit to its node's finish. The node's own hook
// (JobFinished) leaves routing experiments to this one: a job's local
// record starts when its node pulled it, not when it was submitted.
func (c *Controller) ObserveCluster(j *job.Job) {
	if !c.router.routingExperiment() {
		return
	}
	if o, ok := ObservationOf(j, time.Time{}); ok {
		c.Observe(o)
	}
}

// ErrRoutingLive is CheckLive's refusal.
var ErrRoutingLive = errors.New("a routing experiment needs a cluster (cluster.nats), or the simulated one (kiln sim --nodes N --canary routing=POLICY)")

// CheckLive says whether a live node can run spec: a routing experiment
// only in a cluster, whose registry tells the node that routed a job when
// it ended elsewhere (ObserveCluster). It wraps ErrInvalid.
func (s Spec) CheckLive(clustered bool) error {
	if k, err := abi.ParseKind(s.Kind); err == nil && k == abi.KindRouting && !clustered {
		return fmt.Errorf("%w: %w", ErrInvalid, ErrRoutingLive)
	}
	return nil
}
