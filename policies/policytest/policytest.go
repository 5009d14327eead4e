// Package policytest holds the behaviour tables of the built-in policies and
// runs them through the ABI's byte path. Each policy's own tests run its
// table natively; internal/policy runs the same tables through the policy's
// WASM build, so both targets must give the same answers.
package policytest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Case is one input and the answer a policy must give. Exactly one input is
// set. Want lists victims, the dispatch order, the batch, the worker or the
// node;
// Extra lists prefetches or preemptions.
type Case struct {
	Name       string
	Eviction   *abi.EvictionInput
	Scheduling *abi.SchedulingInput
	Batching   *abi.BatchingInput
	Balancing  *abi.BalancingInput
	Routing    *abi.RoutingInput
	Status     abi.Status
	Want       []uint32
	Extra      []uint32
	Wait       time.Duration
	// Check, when set, replaces the comparison of Want.
	Check func(out any) error
}

// Kind is the kind of the case's input.
func (c *Case) Kind() abi.Kind {
	switch {
	case c.Eviction != nil:
		return abi.KindEviction
	case c.Scheduling != nil:
		return abi.KindScheduling
	case c.Batching != nil:
		return abi.KindBatching
	case c.Routing != nil:
		return abi.KindRouting
	}
	return abi.KindBalancing
}

// Input encodes the case's input with the given parameter values (nil: the
// declared defaults, which the policy reads with Common.Param's default).
func (c *Case) Input(params []float64) []byte {
	switch {
	case c.Eviction != nil:
		in := *c.Eviction
		in.Params = params
		return abi.AppendEvictionInput(nil, &in)
	case c.Scheduling != nil:
		in := *c.Scheduling
		in.Params = params
		return abi.AppendSchedulingInput(nil, &in)
	case c.Batching != nil:
		in := *c.Batching
		in.Params = params
		return abi.AppendBatchingInput(nil, &in)
	case c.Routing != nil:
		in := *c.Routing
		in.Params = params
		return abi.AppendRoutingInput(nil, &in)
	}
	in := *c.Balancing
	in.Params = params
	return abi.AppendBalancingInput(nil, &in)
}

// Verify decodes an answer and compares it with the case.
func (c *Case) Verify(out []byte) error {
	var st abi.Status
	var err error
	var want, extra []uint32
	var wait time.Duration
	var decoded any
	switch c.Kind() {
	case abi.KindEviction:
		var o abi.EvictionOutput
		st, err = abi.DecodeEvictionOutput(out, &o)
		want, extra, decoded = o.Victims, o.Prefetch, &o
	case abi.KindScheduling:
		var o abi.SchedulingOutput
		st, err = abi.DecodeSchedulingOutput(out, &o)
		want, extra, decoded = o.Dispatch, o.Preempt, &o
	case abi.KindBatching:
		var o abi.BatchingOutput
		st, err = abi.DecodeBatchingOutput(out, &o)
		want, wait, decoded = o.Batch, o.Wait, &o
	case abi.KindBalancing:
		var o abi.BalancingOutput
		st, err = abi.DecodeBalancingOutput(out, &o)
		decoded = &o
		if o.Worker != abi.NoWorker {
			want = []uint32{o.Worker}
		}
	case abi.KindRouting:
		var o abi.RoutingOutput
		st, err = abi.DecodeRoutingOutput(out, &o)
		decoded = &o
		if o.Node != abi.NoNode {
			want = []uint32{o.Node}
		}
	}
	if err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	if st != c.Status {
		return fmt.Errorf("status %d, want %d", st, c.Status)
	}
	if c.Check != nil {
		return c.Check(decoded)
	}
	if st != abi.StatusOK {
		return nil
	}
	if !slices.Equal(want, c.Want) || !slices.Equal(extra, c.Extra) || wait != c.Wait {
		return fmt.Errorf("answer %v extra %v wait %s; want %v extra %v wait %s", want, extra, wait, c.Want, c.Extra, wait)
	}
	return nil
}

// Run runs the cases of policy name ("kind.name") natively through a
// Guest, the same byte path a WASM build takes.
func Run(t *testing.T, name string, p any) {
	t.Helper()
	cases := Cases[name]
	if len(cases) == 0 {
		t.Fatalf("no cases for %s", name)
	}
	g, err := abi.NewGuest(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if err := c.Verify(g.Call(c.Kind(), c.Input(nil))); err != nil {
				t.Error(err)
			}
		})
	}
}

const gib = 1 << 30

func entries(es ...abi.Entry) []abi.Entry { return es }

// Cases are the tables, by "kind.name".
var Cases = map[string][]Case{
	"eviction.lru": {
		{Name: "oldest first", Eviction: &abi.EvictionInput{Need: 3 * gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: 2 * gib, SinceUse: time.Minute},
			abi.Entry{Model: 1, Bytes: 2 * gib, SinceUse: time.Hour},
			abi.Entry{Model: 2, Bytes: 2 * gib, SinceUse: time.Second},
		)}, Want: []uint32{1, 0}},
		{Name: "skips pinned", Eviction: &abi.EvictionInput{Need: gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: 2 * gib, SinceUse: time.Hour, Pinned: true},
			abi.Entry{Model: 1, Bytes: 2 * gib, SinceUse: time.Minute},
		)}, Want: []uint32{1}},
		{Name: "not enough", Eviction: &abi.EvictionInput{Need: 5 * gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: 2 * gib, Pinned: true}, abi.Entry{Model: 1, Bytes: 2 * gib},
		)}, Status: abi.StatusNoDecision},
		{Name: "prefetch into room", Eviction: &abi.EvictionInput{Need: gib, Free: 2 * gib, Wanted: []abi.Wanted{
			{Model: 5, Bytes: 2 * gib, Waiting: 1}, {Model: 6, Bytes: gib, Waiting: 3},
		}}, Extra: []uint32{1}},
	},
	"eviction.gdsf": {
		{Name: "cheap large goes first", Eviction: &abi.EvictionInput{Need: gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: gib, LoadCost: 10 * time.Second, Hits: 1},
			abi.Entry{Model: 1, Bytes: 8 * gib, LoadCost: time.Second, Hits: 1},
			abi.Entry{Model: 2, Bytes: gib, LoadCost: time.Second, Hits: 9},
		)}, Want: []uint32{1}},
		{Name: "frequency protects", Eviction: &abi.EvictionInput{Need: gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: gib, LoadCost: time.Second, Hits: 10},
			abi.Entry{Model: 1, Bytes: gib, LoadCost: time.Second, Hits: 0},
		)}, Want: []uint32{1}},
		{Name: "inflation keeps old priorities", Eviction: &abi.EvictionInput{Need: gib,
			Common: abi.Common{State: [4]uint64{0x4024000000000000}}, // L = 10
			Entries: entries(
				// Tag from an earlier decision: H = 1 (float32 bits 0x3f800000) at 0 hits.
				abi.Entry{Model: 0, Bytes: gib, LoadCost: time.Second, Tag: 0x3f800000 << 32},
				abi.Entry{Model: 1, Bytes: gib, LoadCost: time.Second},
			)}, Want: []uint32{0}},
	},
	"eviction.demand": {
		{Name: "lowest demand x cost per byte goes first", Eviction: &abi.EvictionInput{Need: gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: gib, LoadCost: 10 * time.Second, Hits: 50},
			abi.Entry{Model: 1, Bytes: gib, LoadCost: 10 * time.Second},
			abi.Entry{Model: 2, Bytes: 8 * gib, LoadCost: 10 * time.Second},
		), RecentDemand: []float64{0.5, 2, 4}}, Want: []uint32{0}},
		{Name: "hits do not protect, demand does", Eviction: &abi.EvictionInput{Need: gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: gib, LoadCost: time.Second, Hits: 10},
			abi.Entry{Model: 1, Bytes: gib, LoadCost: time.Second},
		), RecentDemand: []float64{1, 3}}, Want: []uint32{0}},
		{Name: "no demand is LRU", Eviction: &abi.EvictionInput{Need: 3 * gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: 2 * gib, SinceUse: time.Minute, LoadCost: time.Second},
			abi.Entry{Model: 1, Bytes: 2 * gib, SinceUse: time.Hour, LoadCost: time.Second},
			abi.Entry{Model: 2, Bytes: 2 * gib, SinceUse: time.Second, LoadCost: time.Second},
		)}, Want: []uint32{1, 0}},
		{Name: "skips pinned", Eviction: &abi.EvictionInput{Need: gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: 2 * gib, LoadCost: time.Second, Pinned: true},
			abi.Entry{Model: 1, Bytes: 2 * gib, LoadCost: time.Second},
		), RecentDemand: []float64{0, 5}}, Want: []uint32{1}},
		{Name: "not enough", Eviction: &abi.EvictionInput{Need: 5 * gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: 2 * gib, Pinned: true}, abi.Entry{Model: 1, Bytes: 2 * gib},
		)}, Status: abi.StatusNoDecision},
	},
	"eviction.s3fifo": {
		{Name: "one-hit wonder leaves from small", Eviction: &abi.EvictionInput{Need: gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: gib, SinceInsert: time.Hour, Hits: 2, Tag: 1<<63 | 1<<62},
			abi.Entry{Model: 1, Bytes: gib, SinceInsert: time.Minute},
			abi.Entry{Model: 2, Bytes: gib, SinceInsert: time.Second},
			abi.Entry{Model: 3, Bytes: 7 * gib, SinceInsert: time.Hour, Hits: 1, Tag: 1<<63 | 1<<62 | 2<<32 | 1},
		)}, Want: []uint32{1}},
		{Name: "used in small is promoted", Eviction: &abi.EvictionInput{Need: gib, Common: abi.Common{State: [4]uint64{10}}, Entries: entries(
			abi.Entry{Model: 0, Bytes: gib, SinceInsert: time.Hour, Hits: 1},
			abi.Entry{Model: 1, Bytes: gib, SinceInsert: time.Minute},
			abi.Entry{Model: 2, Bytes: 8 * gib, SinceInsert: time.Hour, Tag: 1<<63 | 1<<62},
		)}, Want: []uint32{1}},
		{Name: "ghost hit enters main", Eviction: &abi.EvictionInput{Need: gib, Ghosts: []abi.Ghost{{Model: 1, Ago: time.Hour}},
			Entries: entries(
				abi.Entry{Model: 0, Bytes: 4 * gib, SinceInsert: time.Hour, Tag: 1<<63 | 1<<62},
				abi.Entry{Model: 1, Bytes: gib, SinceInsert: time.Minute},
				abi.Entry{Model: 2, Bytes: gib, SinceInsert: time.Second},
			)}, Want: []uint32{0}},
		{Name: "huge object is admitted", Eviction: &abi.EvictionInput{Need: gib, Entries: entries(
			abi.Entry{Model: 0, Bytes: 6 * gib, SinceInsert: time.Second},
			abi.Entry{Model: 1, Bytes: 2 * gib, SinceInsert: time.Hour, Tag: 1<<63 | 1<<62},
			abi.Entry{Model: 2, Bytes: 2 * gib, SinceInsert: time.Hour, Tag: 1<<63 | 1<<62 | 1<<32},
		)}, Want: []uint32{1}},
	},
	"scheduling.fifo": {
		{Name: "submission order", Scheduling: &abi.SchedulingInput{Queued: []abi.Job{
			{Seq: 3, Class: abi.ClassInteractive}, {Seq: 1, Class: abi.ClassBatch}, {Seq: 2},
		}}, Want: []uint32{1, 2, 0}},
		{Name: "empty", Scheduling: &abi.SchedulingInput{}, Status: abi.StatusNoDecision},
	},
	"scheduling.priority": {
		{Name: "interactive first", Scheduling: &abi.SchedulingInput{Queued: []abi.Job{
			{Seq: 1, Class: abi.ClassBatch}, {Seq: 3, Class: abi.ClassInteractive}, {Seq: 2, Class: abi.ClassInteractive},
		}}, Want: []uint32{2, 1, 0}},
		{Name: "preempts at step boundary", Scheduling: &abi.SchedulingInput{
			Queued:  []abi.Job{{Seq: 5, Class: abi.ClassInteractive, Age: time.Minute}},
			Running: []abi.Job{{Seq: 1, Class: abi.ClassBatch, AtStepBoundary: true}, {Seq: 2, Class: abi.ClassBatch, AtStepBoundary: true}, {Seq: 3, Class: abi.ClassBatch}},
			Workers: []abi.Worker{{}, {}, {}},
		}, Want: []uint32{0}, Extra: []uint32{1}},
		{Name: "no preemption before the bound", Scheduling: &abi.SchedulingInput{
			Queued:  []abi.Job{{Seq: 5, Class: abi.ClassInteractive, Age: time.Second}},
			Running: []abi.Job{{Seq: 1, Class: abi.ClassBatch, AtStepBoundary: true}},
			Workers: []abi.Worker{{}},
		}, Want: []uint32{0}},
		{Name: "no preemption with an idle worker", Scheduling: &abi.SchedulingInput{
			Queued:  []abi.Job{{Seq: 5, Class: abi.ClassInteractive, Age: time.Hour}},
			Running: []abi.Job{{Seq: 1, Class: abi.ClassBatch, AtStepBoundary: true}},
			Workers: []abi.Worker{{}, {Idle: true}},
		}, Want: []uint32{0}},
	},
	"scheduling.edf": {
		{Name: "least slack first", Scheduling: &abi.SchedulingInput{Queued: []abi.Job{
			{Seq: 1, Class: abi.ClassInteractive},
			{Seq: 2, HasDeadline: true, Slack: 10 * time.Second, EstCost: 2 * time.Second},
			{Seq: 3, HasDeadline: true, Slack: 9 * time.Second, EstCost: 8 * time.Second},
			{Seq: 4, Class: abi.ClassBatch},
		}}, Want: []uint32{2, 1, 0, 3}},
		{Name: "late jobs first", Scheduling: &abi.SchedulingInput{Queued: []abi.Job{
			{Seq: 1, HasDeadline: true, Slack: time.Second},
			{Seq: 2, HasDeadline: true, Slack: -time.Second},
		}}, Want: []uint32{1, 0}},
	},
	"batching.none": {
		{Name: "alone", Batching: &abi.BatchingInput{Lead: 1, Jobs: []abi.Job{{Seq: 1, BatchKey: 1}, {Seq: 2, BatchKey: 1}}}, Want: []uint32{1}},
	},
	"batching.same-model": {
		{Name: "groups same key", Batching: &abi.BatchingInput{Lead: 0, Models: []abi.ModelInfo{{Bytes: gib}, {Bytes: gib}},
			Jobs: []abi.Job{
				{Seq: 1, BatchKey: 1, Models: []uint32{0}, Age: time.Second},
				{Seq: 4, BatchKey: 1, Models: []uint32{0}}, {Seq: 2, BatchKey: 2, Models: []uint32{1}},
				{Seq: 3, BatchKey: 1, Models: []uint32{0}}, {Seq: 5, BatchKey: 1, Models: []uint32{0}}, {Seq: 6, BatchKey: 1, Models: []uint32{0}},
			}}, Want: []uint32{0, 3, 1, 4}},
		{Name: "waits for company", Batching: &abi.BatchingInput{Lead: 0, Jobs: []abi.Job{
			{Seq: 1, BatchKey: 1, Age: 50 * time.Millisecond},
		}}, Want: []uint32{0}, Wait: 150 * time.Millisecond},
		{Name: "bounded by vram", Batching: &abi.BatchingInput{Lead: 0, Models: []abi.ModelInfo{{Bytes: 4 * gib}},
			Workers: []abi.Worker{{Idle: true, FreeVRAM: 6 * gib}},
			Jobs: []abi.Job{
				{Seq: 1, BatchKey: 1, Models: []uint32{0}, VRAM: 4 * gib, BatchVRAM: gib, Age: time.Second},
				{Seq: 2, BatchKey: 1, Models: []uint32{0}, VRAM: 4 * gib, BatchVRAM: gib},
				{Seq: 3, BatchKey: 1, Models: []uint32{0}, VRAM: 4 * gib, BatchVRAM: gib},
				{Seq: 4, BatchKey: 1, Models: []uint32{0}, VRAM: 4 * gib, BatchVRAM: gib},
			}}, Want: []uint32{0, 1, 2}},
		{Name: "unbatchable job alone", Batching: &abi.BatchingInput{Lead: 0, Jobs: []abi.Job{{Seq: 1}, {Seq: 2}}}, Want: []uint32{0}},
	},
	"balancing.round-robin": {
		{Name: "next after last", Balancing: &abi.BalancingInput{Common: abi.Common{State: [4]uint64{1}},
			Workers: []abi.Worker{{Idle: true}, {Idle: true}, {Idle: false}, {Idle: true}}}, Want: []uint32{3}},
		{Name: "wraps", Balancing: &abi.BalancingInput{Common: abi.Common{State: [4]uint64{3}},
			Workers: []abi.Worker{{Idle: true}, {Idle: true}, {Idle: false}, {Idle: true}}}, Want: []uint32{0}},
		{Name: "none idle", Balancing: &abi.BalancingInput{Workers: []abi.Worker{{}}}, Status: abi.StatusNoDecision},
	},
	"balancing.least-loaded": {
		{Name: "fewest busy", Balancing: &abi.BalancingInput{Workers: []abi.Worker{
			{Idle: true, DeviceBusy: 2}, {Idle: true, DeviceBusy: 1}, {Idle: false},
		}}, Want: []uint32{1}},
		{Name: "resident breaks ties", Balancing: &abi.BalancingInput{Models: []abi.ModelInfo{{Bytes: gib}},
			Job:     abi.Job{Models: []uint32{0}},
			Workers: []abi.Worker{{Idle: true, FreeVRAM: 9 * gib}, {Idle: true, Resident: []uint32{0}}}}, Want: []uint32{1}},
		{Name: "degraded last", Balancing: &abi.BalancingInput{Workers: []abi.Worker{{Idle: true, Degraded: true}, {Idle: true, DeviceBusy: 3}}}, Want: []uint32{1}},
		{Name: "too big", Balancing: &abi.BalancingInput{Job: abi.Job{VRAM: 9 * gib}, Workers: []abi.Worker{{Idle: true, UsableVRAM: 8 * gib}}}, Status: abi.StatusNoDecision},
	},
	"balancing.affinity": {
		{Name: "resident model wins", Balancing: &abi.BalancingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib, LoadCost: 3 * time.Second}},
			Job:     abi.Job{Models: []uint32{0}},
			Workers: []abi.Worker{{Idle: true}, {Idle: true, Resident: []uint32{0}, Wait: time.Second}}}, Want: []uint32{1}},
		{Name: "waiting longer than a load", Balancing: &abi.BalancingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib, LoadCost: 3 * time.Second}},
			Job:     abi.Job{Models: []uint32{0}},
			Workers: []abi.Worker{{Idle: true}, {Idle: true, Resident: []uint32{0}, Wait: 5 * time.Second}}}, Want: []uint32{0}},
		{Name: "bandwidth estimate", Balancing: &abi.BalancingInput{Models: []abi.ModelInfo{{Bytes: 10 * gib}},
			Job:     abi.Job{Models: []uint32{0}},
			Workers: []abi.Worker{{Idle: true, H2DBytesPerS: 1 * gib}, {Idle: true, H2DBytesPerS: 20 * gib}}}, Want: []uint32{1}},
		{Name: "bounded spill-over", Balancing: &abi.BalancingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib, LoadCost: 3 * time.Second}},
			Job: abi.Job{Models: []uint32{0}},
			Workers: []abi.Worker{
				{Idle: true, Device: 0, DeviceBusy: 3, Resident: []uint32{0}},
				{Idle: false, Device: 0, DeviceBusy: 3}, {Idle: false, Device: 0, DeviceBusy: 3},
				{Idle: true, Device: 1}, {Idle: true, Device: 2},
			}}, Want: []uint32{3}},
	},
	"routing.random": {
		// The draw is Random mod the candidates, in node order: the
		// unhealthy and the too-small nodes are not counted.
		{Name: "first candidate", Routing: &abi.RoutingInput{Random: 6, Job: abi.Job{VRAM: 8 * gib}, Nodes: routingNodes()}, Want: []uint32{0}},
		{Name: "skips unhealthy and too small", Routing: &abi.RoutingInput{Random: 7, Job: abi.Job{VRAM: 8 * gib}, Nodes: routingNodes()}, Want: []uint32{3}},
		{Name: "wraps", Routing: &abi.RoutingInput{Random: 1<<63 + 2, Job: abi.Job{VRAM: 8 * gib}, Nodes: routingNodes()}, Want: []uint32{0}},
		{Name: "none healthy", Routing: &abi.RoutingInput{Random: 3, Nodes: []abi.Node{{Workers: 1}}}, Status: abi.StatusNoDecision},
	},
	"routing.least-loaded": {
		{Name: "fewest per worker", Routing: &abi.RoutingInput{Nodes: []abi.Node{
			{Healthy: true, Queued: 3, Running: 2, Workers: 2}, {Healthy: true, Queued: 4, Running: 4, Workers: 4}, {Healthy: true, Queued: 1, Running: 2, Workers: 1},
		}}, Want: []uint32{1}},
		{Name: "wait breaks ties", Routing: &abi.RoutingInput{Nodes: []abi.Node{
			{Healthy: true, Running: 1, Workers: 1, Wait: 9 * time.Second}, {Healthy: true, Running: 2, Workers: 2, Wait: time.Second},
		}}, Want: []uint32{1}},
		{Name: "never unhealthy or too small", Routing: &abi.RoutingInput{Job: abi.Job{VRAM: 8 * gib}, Nodes: routingNodes()}, Want: []uint32{3}},
		{Name: "none fits", Routing: &abi.RoutingInput{Job: abi.Job{VRAM: 90 * gib}, Nodes: routingNodes()}, Status: abi.StatusNoDecision},
	},
	"routing.affinity": {
		// A 6 GiB model costs ~7.5 s to load from the model source at the
		// default rates, ~2.4 s from disk, ~0.26 s from RAM.
		{Name: "model in VRAM wins", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib}}, Job: abi.Job{EstCost: 4 * time.Second, Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 2, IdleWorkers: 2}, {Healthy: true, Workers: 2, Running: 1, IdleWorkers: 1, Wait: time.Second, VRAM: []uint32{0}}}},
			Want: []uint32{1}},
		{Name: "RAM beats disk beats nothing", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib}}, Job: abi.Job{Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 1}, {Healthy: true, Workers: 1, Disk: []uint32{0}}, {Healthy: true, Workers: 1, RAM: []uint32{0}, Disk: []uint32{0}}}},
			Want: []uint32{2}},
		{Name: "a long queue outweighs a load", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib}}, Job: abi.Job{Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 1, Running: 1, Wait: time.Minute, VRAM: []uint32{0}}, {Healthy: true, Workers: 1, Disk: []uint32{0}}}},
			Want: []uint32{1}},
		// Measured rates count: node 0 is idle but reads its disk at
		// 100 MB/s (6 GiB: ~64 s); node 1 waits 3 s and reads at 3 GB/s
		// (~2 s). Both are under the bound (1.2 × (2 + 4) s; node 1's
		// share of the job is 2 s). At the default rates node 0 would win.
		{Name: "measured load rates count", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib}}, Job: abi.Job{EstCost: 4 * time.Second, Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 1, Disk: []uint32{0}, DiskBytesPerS: 100e6, H2DBytesPerS: 25e9},
				{Healthy: true, Workers: 2, Running: 2, Wait: 3 * time.Second, Disk: []uint32{0}, DiskBytesPerS: 3e9, H2DBytesPerS: 25e9}}},
			Want: []uint32{1}},
		{Name: "network delay counts", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: gib}}, Job: abi.Job{Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 1, Delay: 2 * time.Second, VRAM: []uint32{0}}, {Healthy: true, Workers: 1, RAM: []uint32{0}}}},
			Want: []uint32{1}},
		// A 12 GiB model costs ~15 s to load from the model source. The
		// load bound is in work: the mean wait is (40+0+5)/3 = 15 s, so
		// with a 4 s job the bound is 1.2 × (15 + 4) = 22.8 s. Node 0
		// holds the model but would wait 40 + 4/2 = 42 s: the job goes to
		// the cheapest node under its bound (1: 15 s of load; 2: 5 s of
		// wait and the same load).
		{Name: "bounded spill-over", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 12 * gib}}, Job: abi.Job{EstCost: 4 * time.Second, Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 2, Running: 2, Queued: 6, Wait: 40 * time.Second, VRAM: []uint32{0}},
				{Healthy: true, Workers: 2}, {Healthy: true, Workers: 2, Running: 1, Wait: 5 * time.Second}}},
			Want: []uint32{1}},
		// The mean wait is 4 s, the bound 1.2 × (4 + 4) = 9.6 s; node 0
		// would wait 7 + 2 = 9 s, under it, and 7 s of wait beats the
		// 15 s load anywhere else.
		{Name: "under the bound the holder keeps it", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 12 * gib}}, Job: abi.Job{EstCost: 4 * time.Second, Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 2, Running: 2, Queued: 1, Wait: 7 * time.Second, VRAM: []uint32{0}},
				{Healthy: true, Workers: 2}, {Healthy: true, Workers: 2, Running: 1, Wait: 5 * time.Second}}},
			Want: []uint32{0}},
		// Near prices: three idle nodes, the model on none. The first
		// node in order used to take every such load; the one with the
		// most free VRAM takes it without evicting anything.
		{Name: "equal prices: the most free VRAM wins", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib}}, Job: abi.Job{EstCost: 4 * time.Second, Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 2, IdleWorkers: 2, FreeVRAM: 10 * gib}, {Healthy: true, Workers: 2, IdleWorkers: 2, FreeVRAM: 40 * gib},
				{Healthy: true, Workers: 2, IdleWorkers: 2, FreeVRAM: 20 * gib}}},
			Want: []uint32{1}},
		// Measured rates differ a little between like nodes: node 0's
		// model source is 4% faster (~0.2 s less on ~7.5 s), within near
		// (0.2) of it, so node 1's free VRAM still wins.
		{Name: "near prices count as equal", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib}}, Job: abi.Job{EstCost: 4 * time.Second, Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 2, IdleWorkers: 2, FreeVRAM: 10 * gib, RemoteBytesPerS: 1.3e9},
				{Healthy: true, Workers: 2, IdleWorkers: 2, FreeVRAM: 40 * gib, RemoteBytesPerS: 1.25e9}}},
			Want: []uint32{1}},
		// Not near: node 0 holds the model on disk (~2.4 s), node 1 would
		// read it from the source first (~7.5 s); free VRAM does not buy
		// that.
		{Name: "a clearly cheaper node keeps it", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib}}, Job: abi.Job{EstCost: 4 * time.Second, Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 2, IdleWorkers: 2, FreeVRAM: gib, Disk: []uint32{0}}, {Healthy: true, Workers: 2, IdleWorkers: 2, FreeVRAM: 90 * gib}}},
			Want: []uint32{0}},
		// The margin is a fraction of the loads, not of the wait: both
		// nodes hold the model in VRAM, so only an equal price is near,
		// and a second more of wait is not bought with free VRAM.
		{Name: "a longer wait is not near", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 6 * gib}}, Job: abi.Job{EstCost: 4 * time.Second, Models: []uint32{0}},
			Nodes: []abi.Node{{Healthy: true, Workers: 2, Running: 2, Queued: 3, Wait: 10 * time.Second, FreeVRAM: gib, VRAM: []uint32{0}},
				{Healthy: true, Workers: 2, Running: 2, Queued: 3, Wait: 11 * time.Second, FreeVRAM: 40 * gib, VRAM: []uint32{0}}}},
			Want: []uint32{0}},
		{Name: "never unhealthy or too small", Routing: &abi.RoutingInput{Models: []abi.ModelInfo{{Bytes: 8 * gib}}, Job: abi.Job{VRAM: 8 * gib, Models: []uint32{0}},
			Nodes: []abi.Node{{Workers: 1, VRAM: []uint32{0}}, {Healthy: true, Workers: 1, UsableVRAM: 4 * gib, VRAM: []uint32{0}}, {Healthy: true, Workers: 1, Queued: 9}}},
			Want: []uint32{2}},
		{Name: "none healthy", Routing: &abi.RoutingInput{Nodes: []abi.Node{{Workers: 1}}}, Status: abi.StatusNoDecision},
	},
}

// routingNodes is a cluster of four nodes for the routing tables: healthy
// and big enough (0 and 3), unhealthy (1), too small for an 8 GiB job (2).
func routingNodes() []abi.Node {
	return []abi.Node{
		{Healthy: true, Workers: 1, UsableVRAM: 20 * gib, Queued: 2},
		{Workers: 1, UsableVRAM: 20 * gib},
		{Healthy: true, Workers: 1, UsableVRAM: 4 * gib},
		{Healthy: true, Workers: 1, UsableVRAM: 20 * gib, Queued: 1},
	}
}
