package experiment

import (
	"errors"
	"fmt"

	"github.com/kiln-gpu/kiln/internal/decision"
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
// A live cluster cannot do this yet: each node's controller sees only the
// jobs that finish on it, so the arm of a job routed by one node and run
// by another is unknown where it finishes. CheckLive refuses it there; the
// simulated cluster (internal/sim RunCluster) has one controller for all
// its nodes.

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

// ErrRoutingLive is CheckLive's refusal.
var ErrRoutingLive = errors.New("routing experiments run in the simulated cluster only (kiln sim --nodes N --canary routing=POLICY): " +
	"a live node's controller sees only the jobs that finish on it, not those its routing sent elsewhere")

// CheckLive says whether a live node can run spec: not a routing
// experiment (see RouteSplit). It wraps ErrInvalid.
func (s Spec) CheckLive() error {
	if k, err := abi.ParseKind(s.Kind); err == nil && k == abi.KindRouting {
		return fmt.Errorf("%w: %w", ErrInvalid, ErrRoutingLive)
	}
	return nil
}
