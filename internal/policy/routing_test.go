package policy

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// routeRecorder keeps a copy of the last routing input and answers the
// last healthy node that fits, so that a test sees what the Router
// adapter hands a policy and that the answer maps back to the node's ID.
type routeRecorder struct{}

var recordedRoute abi.RoutingInput

func (routeRecorder) Route(in *abi.RoutingInput, out *abi.RoutingOutput) abi.Status {
	recordedRoute = *in
	recordedRoute.Models = slices.Clone(in.Models)
	recordedRoute.Job.Models = slices.Clone(in.Job.Models)
	recordedRoute.Nodes = slices.Clone(in.Nodes)
	for i := range recordedRoute.Nodes {
		n := &recordedRoute.Nodes[i]
		n.VRAM, n.RAM, n.Disk = slices.Clone(n.VRAM), slices.Clone(n.RAM), slices.Clone(n.Disk)
	}
	out.Node = abi.NoNode
	for i := range in.Nodes {
		if abi.FitsNode(&in.Job, &in.Nodes[i]) {
			out.Node = uint32(i)
		}
	}
	if out.Node == abi.NoNode {
		return abi.StatusNoDecision
	}
	return abi.StatusOK
}

func init() {
	RegisterNative(abi.KindRouting, "test-route-recorder", func() any { return routeRecorder{} })
}

// TestEveryNodeViewFieldReachesTheRoutingPolicy changes one field at a
// time of the job and of a node's view and checks that what the routing
// policy receives changes with it (as TestEveryViewFieldReachesThePolicy
// does for the node's own kinds), that a node's tier lists carry only the
// job's models, and that the chosen index comes back as the node's ID.
func TestEveryNodeViewFieldReachesTheRoutingPolicy(t *testing.T) {
	h := newTestHost(t, Config{NativeBuiltins: true, Routing: "test-route-recorder"})
	baseJob := func() decision.JobView {
		return decision.JobView{ID: "a", Class: job.Batch, Seq: 1, Age: time.Second, Models: []string{"m1", "m2"},
			ModelBytes: []uint64{1 << 30, 2 << 30}, EstimatedVRAM: 3 << 30, EstimatedCost: time.Second, Attempts: 1}
	}
	baseNodes := func() []decision.NodeView {
		return []decision.NodeView{
			{ID: "n0", Healthy: true, Workers: 2, IdleWorkers: 1, Running: 1, Queued: 3, FreeVRAM: 4 << 30, UsableVRAM: 20 << 30,
				EstimatedWait: time.Second, Delay: time.Millisecond, H2DBytesPerS: 1e9, DiskBytesPerS: 2e9, RemoteBytesPerS: 3e8,
				VRAM: []string{"m1"}, RAM: []string{"m1", "other"}, Disk: []string{"m1", "m2", "other"}},
			{ID: "n1", Healthy: true, Workers: 1, UsableVRAM: 20 << 30},
		}
	}
	route := func(j decision.JobView, nodes []decision.NodeView, random uint64) (string, abi.RoutingInput) {
		id, ok := h.Router().Route(decision.RouteRequest{Job: j, Nodes: nodes, Random: random})
		if !ok {
			t.Fatal("no node chosen")
		}
		return id, recordedRoute
	}
	id, in := route(baseJob(), baseNodes(), 5)
	if id != "n1" {
		t.Errorf("routed to %q, want n1 (index 1)", id)
	}
	if in.Random != 5 {
		t.Errorf("Random %d, want 5", in.Random)
	}
	// Model ids follow the job's models; "other" is no model of the job's.
	if got := fmt.Sprint(in.Job.Models, in.Nodes[0].VRAM, in.Nodes[0].RAM, in.Nodes[0].Disk); got != "[0 1] [0] [0] [0 1]" {
		t.Errorf("job models and node 0's tiers %s, want [0 1] [0] [0] [0 1]", got)
	}
	if in.Job.Worker != abi.NoWorker {
		t.Errorf("job worker %d, want NoWorker", in.Job.Worker)
	}
	jobCases := []struct {
		field  string
		change func(j *decision.JobView)
		seen   func(in abi.RoutingInput) any
	}{
		{"Seq", func(j *decision.JobView) { j.Seq = 9 }, func(in abi.RoutingInput) any { return in.Job.Seq }},
		{"Class", func(j *decision.JobView) { j.Class = job.Interactive }, func(in abi.RoutingInput) any { return in.Job.Class }},
		{"Age", func(j *decision.JobView) { j.Age = time.Hour }, func(in abi.RoutingInput) any { return in.Job.Age }},
		{"DeadlineMS", func(j *decision.JobView) { j.DeadlineMS = 30000 }, func(in abi.RoutingInput) any {
			return fmt.Sprint(in.Job.HasDeadline, in.Job.Slack)
		}},
		{"Attempts", func(j *decision.JobView) { j.Attempts = 3 }, func(in abi.RoutingInput) any { return in.Job.Attempts }},
		{"EstimatedVRAM", func(j *decision.JobView) { j.EstimatedVRAM = 5 << 30 }, func(in abi.RoutingInput) any { return in.Job.VRAM }},
		{"EstimatedCost", func(j *decision.JobView) { j.EstimatedCost = time.Minute }, func(in abi.RoutingInput) any { return in.Job.EstCost }},
		{"ModelBytes", func(j *decision.JobView) { j.ModelBytes = []uint64{3 << 30, 2 << 30} }, func(in abi.RoutingInput) any { return in.Models[0].Bytes }},
		{"Models", func(j *decision.JobView) { j.Models = []string{"m2"} }, func(in abi.RoutingInput) any {
			return fmt.Sprint(in.Job.Models, in.Nodes[0].VRAM)
		}},
		{"BatchVRAM", func(j *decision.JobView) { j.BatchVRAM = 1 << 29 }, func(in abi.RoutingInput) any { return in.Job.BatchVRAM }},
	}
	for _, tc := range jobCases {
		t.Run("job."+tc.field, func(t *testing.T) {
			_, in := route(baseJob(), baseNodes(), 1)
			before := fmt.Sprint(tc.seen(in))
			j := baseJob()
			tc.change(&j)
			if _, in := route(j, baseNodes(), 1); fmt.Sprint(tc.seen(in)) == before {
				t.Errorf("the policy saw %s both times: the field does not reach it", before)
			}
		})
	}
	nodeCases := []struct {
		field  string
		change func(n *decision.NodeView)
		seen   func(n abi.Node) any
	}{
		{"Healthy", func(n *decision.NodeView) { n.Healthy = false }, func(n abi.Node) any { return n.Healthy }},
		{"Queued", func(n *decision.NodeView) { n.Queued = 7 }, func(n abi.Node) any { return n.Queued }},
		{"Running", func(n *decision.NodeView) { n.Running = 2 }, func(n abi.Node) any { return n.Running }},
		{"Workers", func(n *decision.NodeView) { n.Workers = 8 }, func(n abi.Node) any { return n.Workers }},
		{"IdleWorkers", func(n *decision.NodeView) { n.IdleWorkers = 0 }, func(n abi.Node) any { return n.IdleWorkers }},
		{"FreeVRAM", func(n *decision.NodeView) { n.FreeVRAM = 9 << 30 }, func(n abi.Node) any { return n.FreeVRAM }},
		{"UsableVRAM", func(n *decision.NodeView) { n.UsableVRAM = 40 << 30 }, func(n abi.Node) any { return n.UsableVRAM }},
		{"EstimatedWait", func(n *decision.NodeView) { n.EstimatedWait = time.Minute }, func(n abi.Node) any { return n.Wait }},
		{"Delay", func(n *decision.NodeView) { n.Delay = time.Second }, func(n abi.Node) any { return n.Delay }},
		{"H2DBytesPerS", func(n *decision.NodeView) { n.H2DBytesPerS = 2e10 }, func(n abi.Node) any { return n.H2DBytesPerS }},
		{"DiskBytesPerS", func(n *decision.NodeView) { n.DiskBytesPerS = 7e9 }, func(n abi.Node) any { return n.DiskBytesPerS }},
		{"RemoteBytesPerS", func(n *decision.NodeView) { n.RemoteBytesPerS = 1e9 }, func(n abi.Node) any { return n.RemoteBytesPerS }},
		{"VRAM", func(n *decision.NodeView) { n.VRAM = []string{"m2"} }, func(n abi.Node) any { return fmt.Sprint(n.VRAM) }},
		{"RAM", func(n *decision.NodeView) { n.RAM = nil }, func(n abi.Node) any { return fmt.Sprint(n.RAM) }},
		{"Disk", func(n *decision.NodeView) { n.Disk = []string{"m2"} }, func(n abi.Node) any { return fmt.Sprint(n.Disk) }},
	}
	for _, tc := range nodeCases {
		t.Run("node."+tc.field, func(t *testing.T) {
			_, in := route(baseJob(), baseNodes(), 1)
			before := fmt.Sprint(tc.seen(in.Nodes[0]))
			nodes := baseNodes()
			tc.change(&nodes[0])
			if _, in := route(baseJob(), nodes, 1); fmt.Sprint(tc.seen(in.Nodes[0])) == before {
				t.Errorf("the policy saw %s both times: the field does not reach it", before)
			}
		})
	}
}

// TestRouterAnswersAreChecked: an answer naming a node that is unhealthy
// or too small for the job is invalid and the fallback (least-loaded)
// answers instead; with no node that can hold the job, no node is chosen.
func TestRouterAnswersAreChecked(t *testing.T) {
	h := newTestHost(t, Config{NativeBuiltins: true, Routing: "random"})
	j := decision.JobView{ID: "a", Models: []string{"m"}, ModelBytes: []uint64{8 << 30}, EstimatedVRAM: 8 << 30}
	nodes := []decision.NodeView{
		{ID: "sick", Workers: 1, UsableVRAM: 20 << 30},
		{ID: "small", Healthy: true, Workers: 1, UsableVRAM: 4 << 30},
		{ID: "busy", Healthy: true, Workers: 1, Queued: 9, UsableVRAM: 20 << 30},
		{ID: "free", Healthy: true, Workers: 1, UsableVRAM: 20 << 30},
	}
	seen := map[string]int{}
	for r := range uint64(64) {
		id, ok := h.Router().Route(decision.RouteRequest{Job: j, Nodes: nodes, Random: r})
		if !ok {
			t.Fatalf("random %d: no node", r)
		}
		seen[id]++
	}
	// random draws among the two candidates only, from the word it is given.
	if seen["busy"] != 32 || seen["free"] != 32 || len(seen) != 2 {
		t.Errorf("random routed %v; want busy and free 32 times each", seen)
	}
	if id, ok := h.Router().Route(decision.RouteRequest{Job: j, Nodes: nodes[:2], Random: 1}); ok {
		t.Errorf("routed to %q with no node able to hold the job", id)
	}
}
