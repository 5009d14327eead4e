package policy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Router is the decision.Router backed by the active routing policy (ABI
// 1.2): the cluster's choice of the node that takes a job. Get it from
// Host.Router. A fault (trap, timeout, invalid answer, stall) is answered
// in the same call by the native least-loaded routing policy and counted,
// as for every kind.
type Router struct{ h *Host }

var _ decision.Router = (*Router)(nil)

// Router returns the adapter that asks the active routing policy.
func (h *Host) Router() *Router { return &h.route }

// Router asks the arm's version; nil unless it is a routing arm.
func (a *Arm) Router() *Router { return pick(a, abi.KindRouting, &a.route) }

// routeConv is one routing decision's conversion buffers.
type routeConv struct {
	models interner
	infos  []abi.ModelInfo
	in     abi.RoutingInput
	out    abi.RoutingOutput
	sc     scratch
}

var routeConvPool = sync.Pool{New: func() any { return &routeConv{} }}

// Route implements decision.Router.
func (r *Router) Route(req decision.RouteRequest) (string, bool) {
	h := r.h
	v := h.slots[abi.KindRouting].active.Load()
	c := routeConvPool.Get().(*routeConv)
	defer routeConvPool.Put(c)
	c.models.reset()
	c.infos = c.infos[:0]
	in := &c.in
	in.Random = req.Random
	convertRoutingInput(c, req)
	st, err := decide(context.Background(), h, v, routingOps, in, &c.out, &c.sc)
	if h.onFault(v, err) {
		st = fallback(routingOps, in, &c.out)
	}
	if st != abi.StatusOK {
		return "", false
	}
	return req.Nodes[c.out.Node].ID, true
}

// convertRoutingInput fills c.in from the request. The nodes' tier lists
// carry only the job's models: a node's other residents do not change
// what this job costs there, and the input stays small at 64 nodes.
func convertRoutingInput(c *routeConv, req decision.RouteRequest) {
	in := &c.in
	j := &req.Job
	jobModels := in.Job.Models[:0]
	for i, m := range j.Models {
		id, fresh := c.models.id(m)
		if fresh {
			var b uint64
			if i < len(j.ModelBytes) {
				b = j.ModelBytes[i]
			}
			c.infos = append(c.infos, abi.ModelInfo{Bytes: b})
		}
		if !slices.Contains(jobModels, id) {
			jobModels = append(jobModels, id)
		}
	}
	class := abi.ClassBatch
	if j.Class == job.Interactive {
		class = abi.ClassInteractive
	}
	// A job to route runs nowhere yet and batches with nothing on a
	// node it has not reached; jobViewFields (views_gen.go) copies the
	// fields that need no conversion.
	in.Job = abi.Job{Class: class, HasDeadline: j.DeadlineMS > 0, Models: jobModels, Worker: abi.NoWorker}
	jobViewFields(&in.Job, j)
	if in.Job.HasDeadline {
		in.Job.Slack = time.Duration(j.DeadlineMS)*time.Millisecond - j.Age
	}
	in.Nodes = grow(in.Nodes, len(req.Nodes))
	for i := range req.Nodes {
		n := &req.Nodes[i]
		dst := &in.Nodes[i]
		// Times are never negative to a policy; the tier lists name the
		// job's models only. nodeViewFields (views_gen.go) copies the rest.
		*dst = abi.Node{Wait: max(n.EstimatedWait, 0), Delay: max(n.Delay, 0),
			VRAM: c.jobModelsIn(dst.VRAM[:0], n.VRAM), RAM: c.jobModelsIn(dst.RAM[:0], n.RAM), Disk: c.jobModelsIn(dst.Disk[:0], n.Disk)}
		nodeViewFields(dst, n)
	}
	in.Models = c.infos
}

// jobModelsIn appends the ids of the job's models among names.
func (c *routeConv) jobModelsIn(dst []uint32, names []string) []uint32 {
	for _, m := range names {
		if id, ok := c.models.lookup(m); ok && !slices.Contains(dst, id) {
			dst = append(dst, id)
		}
	}
	return dst
}

var routingOps = &ops[abi.RoutingInput, abi.RoutingOutput]{
	kind:   abi.KindRouting,
	common: func(in *abi.RoutingInput) *abi.Common { return &in.Common },
	state:  func(o *abi.RoutingOutput) *[4]uint64 { return &o.State },
	reset:  func(o *abi.RoutingOutput) { *o = abi.RoutingOutput{Node: abi.NoNode} },
	native: func(p any, in *abi.RoutingInput, out *abi.RoutingOutput) abi.Status {
		if r, ok := p.(abi.Router); ok {
			return r.Route(in, out)
		}
		return abi.StatusUnsupported
	},
	encode: abi.AppendRoutingInput,
	decode: abi.DecodeRoutingOutput,
	stall:  routingStall,
	valid: func(in *abi.RoutingInput, out *abi.RoutingOutput) error {
		if int64(out.Node) >= int64(len(in.Nodes)) {
			return fmt.Errorf("node %d does not exist (%d nodes)", out.Node, len(in.Nodes))
		}
		n := &in.Nodes[out.Node]
		if !n.Healthy {
			return fmt.Errorf("node %d is not healthy", out.Node)
		}
		if !abi.FitsNode(&in.Job, n) {
			return fmt.Errorf("node %d cannot hold the job's %d bytes", out.Node, in.Job.VRAM)
		}
		return nil
	},
}

// routingStall reports an answer that routes the job nowhere while a
// healthy node can hold it. Unlike balancing, a busy node is a fine
// answer: the job queues there; only no node at all leaves it stuck.
func routingStall(in *abi.RoutingInput, _ *abi.RoutingOutput, st abi.Status) error {
	if st == abi.StatusOK {
		return nil
	}
	for i := range in.Nodes {
		if abi.FitsNode(&in.Job, &in.Nodes[i]) {
			return fmt.Errorf("routed the job nowhere while healthy node %d can hold it", i)
		}
	}
	return nil
}

// routingSamples are the routing kind's fixed self-test inputs
// (docs/policies.md, "The self-test inputs"): a cluster of four nodes —
// one idle with the job's model in VRAM, one busy with it on disk, one
// unhealthy, one too small for the job — and a cluster where no node is
// healthy, where the only right answer is NO_DECISION.
func routingSamples(models []abi.ModelInfo, j abi.Job) []struct {
	name string
	in   *abi.RoutingInput
} {
	nodes := []abi.Node{
		{Healthy: true, Workers: 2, IdleWorkers: 2, FreeVRAM: 30 * gib, UsableVRAM: 20 * gib, VRAM: []uint32{1}, RAM: []uint32{1}, Disk: []uint32{1}},
		{Healthy: true, Queued: 4, Running: 2, Workers: 2, FreeVRAM: 4 * gib, UsableVRAM: 20 * gib, Wait: 20 * time.Second,
			H2DBytesPerS: 25e9, DiskBytesPerS: 3e9, RemoteBytesPerS: 1.25e9, Disk: []uint32{1}},
		{Healthy: false, Workers: 2, IdleWorkers: 2, UsableVRAM: 20 * gib, VRAM: []uint32{1}},
		{Healthy: true, Workers: 1, IdleWorkers: 1, UsableVRAM: 4 * gib},
	}
	down := []abi.Node{{Workers: 1, UsableVRAM: 20 * gib}, {Workers: 1, IdleWorkers: 1, UsableVRAM: 20 * gib}}
	return []struct {
		name string
		in   *abi.RoutingInput
	}{
		{"cluster", &abi.RoutingInput{Random: 0x9e3779b97f4a7c15, Models: models, Job: j, Nodes: nodes}},
		{"none healthy", &abi.RoutingInput{Random: 7, Models: models, Job: j, Nodes: down}},
	}
}

// nodes draws a cluster of 1 to 8 nodes for the random self-test: some
// unhealthy, some too small, with random residency in each tier.
func (s *sampler) nodes(ms []abi.ModelInfo) []abi.Node {
	ns := make([]abi.Node, 1+s.rng.IntN(8))
	for i := range ns {
		workers := uint32(1 + s.rng.IntN(8))
		running := uint32(s.rng.IntN(int(workers) + 1))
		n := abi.Node{Healthy: s.rng.IntN(5) != 0, Workers: workers, Running: running, IdleWorkers: workers - running,
			Queued: uint32(s.rng.IntN(20)), UsableVRAM: uint64(s.rng.IntN(80)) * gib, FreeVRAM: uint64(s.rng.IntN(160)) * gib,
			Wait: s.dur(time.Minute), Delay: s.dur(10 * time.Millisecond)}
		if s.rng.IntN(2) == 0 {
			n.H2DBytesPerS, n.DiskBytesPerS, n.RemoteBytesPerS = uint64(1+s.rng.IntN(50))*1e9, uint64(1+s.rng.IntN(7))*1e9, uint64(1+s.rng.IntN(3))*1e9
		}
		n.Disk = s.subset(len(ms), 0, len(ms))
		n.RAM = s.subset(len(ms), 0, len(ms))
		n.VRAM = s.subset(len(ms), 0, 2)
		ns[i] = n
	}
	return ns
}

// RoutePrices are what each node of req would cost the job before it
// could start there — the network delay, the node's estimated wait, and
// the loads of the job's models from that node's fastest tier holding
// each at its measured rates (sdk/policy NodeLoadTime, the price the
// affinity policy minimises) — and how many of the job's models it would
// have to load into VRAM. For judging routing decisions after the fact
// (the routing shadow); no policy is asked.
func RoutePrices(req decision.RouteRequest) (price []time.Duration, loads []int) {
	c := routeConvPool.Get().(*routeConv)
	defer routeConvPool.Put(c)
	c.models.reset()
	c.infos = c.infos[:0]
	convertRoutingInput(c, req)
	in := &c.in
	price = make([]time.Duration, len(in.Nodes))
	loads = make([]int, len(in.Nodes))
	for i := range in.Nodes {
		n := &in.Nodes[i]
		price[i] = n.Delay + n.Wait
		for _, m := range in.Job.Models {
			if t := abi.NodeLoadTime(in.Models, m, n); t > 0 || !slices.Contains(n.VRAM, m) {
				price[i] += t
				loads[i]++
			}
		}
	}
	return price, loads
}
