package decision

import "time"

// NodeView is what a routing policy sees of one node.
//
// Its fields feed the ABI's node record (sdk/policy.Node) as JobView's
// feed the job record; abi:"-" marks those internal/policy/routing.go
// converts by hand.
type NodeView struct {
	// ID names the node (cluster.node_id).
	ID string
	// Healthy is false for a node that is not taking work: its heartbeat
	// lapsed, it is draining, or it lost the cluster. It is never chosen.
	Healthy bool
	// Queued and Running count its jobs; Workers and IdleWorkers its
	// worker processes.
	Queued, Running      int
	Workers, IdleWorkers int
	// FreeVRAM is the unreserved VRAM summed over its devices; UsableVRAM
	// the largest device's usable memory (0: unknown). A job fits the node
	// when its EstimatedVRAM is at most UsableVRAM.
	FreeVRAM, UsableVRAM uint64
	// EstimatedWait is the node's estimate of the time until it could
	// start one more job: its backlog (the rest of its running jobs and
	// its queued jobs' estimates) over its workers; 0 with an idle worker
	// and an empty queue.
	EstimatedWait time.Duration `abi:"-"`
	// Delay is the network time for a job to reach the node.
	Delay time.Duration `abi:"-"`
	// H2DBytesPerS, DiskBytesPerS and RemoteBytesPerS are the node's
	// measured load rates: host RAM → device, disk → RAM, model source →
	// disk (0: unknown; the policies assume the SDK's defaults).
	H2DBytesPerS, DiskBytesPerS, RemoteBytesPerS uint64
	// VRAM, RAM and Disk list the models resident in each of its tiers,
	// sorted: VRAM on any device (L1), host memory (L2), local disk (L3).
	VRAM, RAM, Disk []string `abi:"-"`
}

// RouteRequest is one routing question.
type RouteRequest struct {
	// Job is the job to place: its models, their VRAM footprints
	// (ModelBytes) and its estimates. LoadCost is ignored: a load's price
	// depends on the node, and the policy computes it from the node's
	// tiers and rates.
	Job JobView
	// Nodes are the cluster's nodes, in a stable order (the policy's
	// answer is an index; ties break by it).
	Nodes []NodeView
	// Random is a uniformly random word for policies that choose at
	// random. The caller draws it from its own injected source — a seeded
	// generator in the simulator — so that a run replays exactly.
	Random uint64
}

// Router picks the node of a kiln cluster that takes a job. It returns the
// chosen node's ID, or false when no healthy node can hold the job. The
// caller builds one NodeView per node from what the nodes publish (live:
// internal/cluster's KV bucket of heartbeats; simulated: the nodes' state at
// the instant) and draws Random from its own injected source:
//
//	node, ok := router.Route(decision.RouteRequest{Job: jv, Nodes: views, Random: rng.Uint64()})
//	if !ok { /* no healthy node can hold the job: keep it and ask again */ }
//
// The policy host answers it with the active routing policy and checks
// every answer (ABI 1.2, section 5.5): a node that does not exist, is
// unhealthy or too small is an invalid answer, and no node while a healthy
// node could take the job is a stall; both are faults, answered in the same
// call by the native least-loaded routing policy, so that no job waits on
// a faulty policy.
type Router interface {
	Route(RouteRequest) (node string, ok bool)
}
