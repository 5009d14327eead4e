package policy

import (
	"context"
	"fmt"
	"time"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// ops is what differs between kinds on the decision path.
type ops[I, O any] struct {
	kind   abi.Kind
	common func(*I) *abi.Common
	state  func(*O) *[4]uint64
	reset  func(*O)
	native func(p any, in *I, out *O) abi.Status
	encode func([]byte, *I) []byte
	// encodeFor, when set, encodes instead of encode for a module built
	// for an older minor version: what it could not decode is left out.
	encodeFor func(dst []byte, in *I, minor int) []byte
	decode    func([]byte, *O) (abi.Status, error)
	valid     func(*I, *O) error
	// stall, when set, checks a valid answer (or a NO_DECISION) for
	// leaving work stuck that could progress; see FaultStall.
	stall func(*I, *O, abi.Status) error
}

// scratch is one decision's reusable buffers.
type scratch struct {
	ci callInfo
	// state, when set, holds the state words of the decision's caller
	// instead of the version's: an Evictor keeps its cache's own
	// (ABI 1.1, section 9). The caller serialises its decisions.
	state *[4]uint64
	// limit, when set, is the call timeout of the decision (callInfo.limit).
	limit time.Duration
}

// decide asks version v; it returns the status and, on any fault, a
// *FaultError (the caller then answers with the fallback).
func decide[I, O any](ctx context.Context, h *Host, v *version, op *ops[I, O], in *I, out *O, sc *scratch) (st abi.Status, err error) {
	c := op.common(in)
	start := h.clk.Now()
	c.Now = start.UnixNano()
	defer func() { h.latency.observe(op.kind, h.clk.Since(start)) }()
	if sc.state != nil {
		c.State = *sc.state
	} else {
		v.stateMu.Lock()
		c.State = v.state
		v.stateMu.Unlock()
	}
	c.Params = *v.values.Load()
	op.reset(out)
	*op.state(out) = c.State
	v.calls.Add(1)
	if v.mod == nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					err = &FaultError{Kind: FaultTrap, Err: fmt.Errorf("native policy panicked: %v", r)}
				}
			}()
			st = op.native(v.native, in, out)
		}()
		if err != nil {
			return st, err
		}
	} else {
		if st, err = decideWASM(ctx, v, op, in, out, sc); err != nil {
			return st, err
		}
	}
	switch st {
	case abi.StatusOK:
		if err := op.valid(in, out); err != nil {
			return st, &FaultError{Kind: FaultInvalid, Err: err}
		}
	case abi.StatusNoDecision:
	default:
		return st, &FaultError{Kind: FaultStatus, Err: fmt.Errorf("policy answered status %d", st)}
	}
	// A well-formed answer may still leave work stuck that could move: it
	// is a fault like any other, answered by the native policy, so that no
	// job ever waits on a policy (RATIONALE.md, "Liveness is a fault").
	if op.stall != nil {
		if err := op.stall(in, out, st); err != nil {
			return st, &FaultError{Kind: FaultStall, Err: err}
		}
	}
	if st == abi.StatusOK {
		if sc.state != nil {
			*sc.state = *op.state(out)
		} else {
			v.stateMu.Lock()
			v.state = *op.state(out)
			v.stateMu.Unlock()
		}
	}
	return st, nil
}

// FaultStall is the FaultError kind of a decision that leaves work unable
// to progress while progress is possible: an eviction that frees less than
// the need while unpinned entries could cover it, a scheduling answer that
// dispatches nothing while a queued job fits an idle worker, a balancing
// answer that places nothing while an idle worker can hold the job. A
// NO_DECISION status is judged the same way: it is a fault exactly where a
// decision was needed and possible.
const FaultStall = "stall"

// evictionStall reports an answer that does not make the room asked for
// although the unpinned entries could. A shortfall that only pinned entries
// can close is not the policy's: the kernel waits for a running job to let
// go (with a deadline of its own). Prefetch-only calls (need covered by
// free) cannot stall.
func evictionStall(in *abi.EvictionInput, out *abi.EvictionOutput, st abi.Status) error {
	required := in.Need - min(in.Need, in.Free)
	if required == 0 {
		return nil
	}
	var unpinned, freed uint64
	for i := range in.Entries {
		if !in.Entries[i].Pinned {
			unpinned += in.Entries[i].Bytes
		}
	}
	if unpinned < required {
		return nil
	}
	if st == abi.StatusOK {
		for _, i := range out.Victims {
			freed += in.Entries[i].Bytes
		}
	}
	if freed >= required {
		return nil
	}
	if st != abi.StatusOK {
		return fmt.Errorf("no decision where %d bytes are needed and unpinned entries hold %d", required, unpinned)
	}
	return fmt.Errorf("victims free %d of the %d bytes needed while unpinned entries hold %d", freed, required, unpinned)
}

// schedulingStall reports an answer that dispatches nothing while a queued
// job fits an idle worker (abi.Fits: the device's usable memory can hold
// it, once resident models are evicted).
func schedulingStall(in *abi.SchedulingInput, out *abi.SchedulingOutput, st abi.Status) error {
	if len(in.Queued) == 0 || st == abi.StatusOK && len(out.Dispatch) > 0 {
		return nil
	}
	for wi := range in.Workers {
		w := &in.Workers[wi]
		if !w.Idle {
			continue
		}
		for ji := range in.Queued {
			if abi.Fits(&in.Queued[ji], w) {
				return fmt.Errorf("dispatched nothing while job %d of %d waits and idle worker %d can hold it", ji, len(in.Queued), wi)
			}
		}
	}
	return nil
}

// balancingStall reports an answer that places the job nowhere while an
// idle worker can hold it. (A placement on a busy or too small worker is
// already invalid.)
func balancingStall(in *abi.BalancingInput, _ *abi.BalancingOutput, st abi.Status) error {
	if st == abi.StatusOK {
		return nil
	}
	for wi := range in.Workers {
		if w := &in.Workers[wi]; w.Idle && abi.Fits(&in.Job, w) {
			return fmt.Errorf("placed the job nowhere while idle worker %d can hold it", wi)
		}
	}
	return nil
}

// decideWASM encodes the snapshot straight into the guest's input buffer,
// calls the hook and decodes the answer where the guest left it, before the
// instance goes back to its pool.
func decideWASM[I, O any](ctx context.Context, v *version, op *ops[I, O], in *I, out *O, sc *scratch) (abi.Status, error) {
	m := v.mod
	inst, err := m.get(ctx)
	if err != nil {
		return 0, &FaultError{Kind: FaultTrap, Err: err}
	}
	c := op.common(in)
	sc.ci = callInfo{now: c.Now, params: v.params, values: c.Params, limit: sc.limit}
	var input []byte
	if op.encodeFor != nil {
		input = op.encodeFor(inst.inputBuffer(), in, m.minor)
	} else {
		input = op.encode(inst.inputBuffer(), in)
	}
	answer, err := inst.run(m, &sc.ci, input)
	if err != nil {
		m.discard(inst)
		return 0, m.fault(err)
	}
	st, err := op.decode(answer, out)
	m.put(inst)
	if err != nil {
		return st, &FaultError{Kind: FaultInvalid, Err: err}
	}
	return st, nil
}

func unique(ids []uint32, n int, what string) error {
	if len(ids) > n {
		return fmt.Errorf("%d %s for %d candidates", len(ids), what, n)
	}
	// A bitset on the stack up to 4,096 candidates: a map here cost a
	// scheduling decision over 100 jobs more than its policy did.
	var small [64]uint64
	seen := small[:]
	if n > 64*len(small) {
		seen = make([]uint64, (n+63)/64)
	}
	for _, id := range ids {
		if int64(id) >= int64(n) {
			return fmt.Errorf("%s %d does not exist (%d candidates)", what, id, n)
		}
		w, bit := id/64, uint64(1)<<(id%64)
		if seen[w]&bit != 0 {
			return fmt.Errorf("%s %d chosen twice", what, id)
		}
		seen[w] |= bit
	}
	return nil
}

var evictionOps = &ops[abi.EvictionInput, abi.EvictionOutput]{
	kind:   abi.KindEviction,
	common: func(in *abi.EvictionInput) *abi.Common { return &in.Common },
	state:  func(o *abi.EvictionOutput) *[4]uint64 { return &o.State },
	reset: func(o *abi.EvictionOutput) {
		*o = abi.EvictionOutput{Victims: o.Victims[:0], Prefetch: o.Prefetch[:0], Tags: o.Tags[:0]}
	},
	native: func(p any, in *abi.EvictionInput, out *abi.EvictionOutput) abi.Status {
		if e, ok := p.(abi.Evictor); ok {
			return e.Evict(in, out)
		}
		return abi.StatusUnsupported
	},
	encode: abi.AppendEvictionInput,
	encodeFor: func(dst []byte, in *abi.EvictionInput, minor int) []byte {
		if minor >= 3 || len(in.RecentDemand) == 0 {
			return abi.AppendEvictionInput(dst, in)
		}
		// A 1.2 module's decoder refuses the demand section's bytes.
		demand := in.RecentDemand
		in.RecentDemand = nil
		b := abi.AppendEvictionInput(dst, in)
		in.RecentDemand = demand
		return b
	},
	decode: abi.DecodeEvictionOutput,
	stall:  evictionStall,
	valid: func(in *abi.EvictionInput, out *abi.EvictionOutput) error {
		if err := unique(out.Victims, len(in.Entries), "victim"); err != nil {
			return err
		}
		for _, v := range out.Victims {
			if in.Entries[v].Pinned {
				return fmt.Errorf("victim %d is pinned", v)
			}
		}
		if err := unique(out.Prefetch, len(in.Wanted), "prefetch"); err != nil {
			return err
		}
		for _, t := range out.Tags {
			if int(t.Entry) >= len(in.Entries) {
				return fmt.Errorf("tag for entry %d, which does not exist", t.Entry)
			}
		}
		return nil
	},
}

var schedulingOps = &ops[abi.SchedulingInput, abi.SchedulingOutput]{
	kind:   abi.KindScheduling,
	common: func(in *abi.SchedulingInput) *abi.Common { return &in.Common },
	state:  func(o *abi.SchedulingOutput) *[4]uint64 { return &o.State },
	reset: func(o *abi.SchedulingOutput) {
		*o = abi.SchedulingOutput{Dispatch: o.Dispatch[:0], Preempt: o.Preempt[:0]}
	},
	native: func(p any, in *abi.SchedulingInput, out *abi.SchedulingOutput) abi.Status {
		if s, ok := p.(abi.Scheduler); ok {
			return s.Schedule(in, out)
		}
		return abi.StatusUnsupported
	},
	encode: abi.AppendSchedulingInput,
	decode: abi.DecodeSchedulingOutput,
	stall:  schedulingStall,
	valid: func(in *abi.SchedulingInput, out *abi.SchedulingOutput) error {
		if err := unique(out.Dispatch, len(in.Queued), "job"); err != nil {
			return err
		}
		return unique(out.Preempt, len(in.Running), "preempted job")
	},
}

var batchingOps = &ops[abi.BatchingInput, abi.BatchingOutput]{
	kind:   abi.KindBatching,
	common: func(in *abi.BatchingInput) *abi.Common { return &in.Common },
	state:  func(o *abi.BatchingOutput) *[4]uint64 { return &o.State },
	reset:  func(o *abi.BatchingOutput) { *o = abi.BatchingOutput{Batch: o.Batch[:0]} },
	native: func(p any, in *abi.BatchingInput, out *abi.BatchingOutput) abi.Status {
		if b, ok := p.(abi.Batcher); ok {
			return b.Batch(in, out)
		}
		return abi.StatusUnsupported
	},
	encode: abi.AppendBatchingInput,
	decode: abi.DecodeBatchingOutput,
	valid: func(in *abi.BatchingInput, out *abi.BatchingOutput) error {
		if err := unique(out.Batch, len(in.Jobs), "job"); err != nil {
			return err
		}
		if len(out.Batch) == 0 || out.Batch[0] != in.Lead {
			return fmt.Errorf("batch %v does not start with the lead job %d", out.Batch, in.Lead)
		}
		if out.Wait < 0 || out.Wait > time.Hour {
			return fmt.Errorf("wait %s is outside [0, 1h]", out.Wait)
		}
		return nil
	},
}

var balancingOps = &ops[abi.BalancingInput, abi.BalancingOutput]{
	kind:   abi.KindBalancing,
	common: func(in *abi.BalancingInput) *abi.Common { return &in.Common },
	state:  func(o *abi.BalancingOutput) *[4]uint64 { return &o.State },
	reset:  func(o *abi.BalancingOutput) { *o = abi.BalancingOutput{Worker: abi.NoWorker} },
	native: func(p any, in *abi.BalancingInput, out *abi.BalancingOutput) abi.Status {
		if b, ok := p.(abi.Balancer); ok {
			return b.Balance(in, out)
		}
		return abi.StatusUnsupported
	},
	encode: abi.AppendBalancingInput,
	decode: abi.DecodeBalancingOutput,
	stall:  balancingStall,
	valid: func(in *abi.BalancingInput, out *abi.BalancingOutput) error {
		if int64(out.Worker) >= int64(len(in.Workers)) {
			return fmt.Errorf("worker %d does not exist (%d workers)", out.Worker, len(in.Workers))
		}
		w := &in.Workers[out.Worker]
		if !w.Idle {
			return fmt.Errorf("worker %d is busy", out.Worker)
		}
		if !abi.Fits(&in.Job, w) {
			return fmt.Errorf("worker %d cannot hold the job's %d bytes", out.Worker, in.Job.VRAM)
		}
		return nil
	},
}

// selfTest runs a new version on sample inputs of its kind; every answer
// must decode, validate and carry no error status.
func (h *Host) selfTest(v *version) error {
	ctx := context.Background()
	sc := scratch{limit: selfTestLimit(h.cfg.CallTimeout)}
	check := func(st abi.Status, err error, sample string) error {
		if err != nil {
			return fmt.Errorf("sample %s: %w", sample, err)
		}
		return nil
	}
	const gib = 1 << 30
	models := []abi.ModelInfo{{Bytes: 2 * gib, LoadCost: time.Second}, {Bytes: 6 * gib, LoadCost: 3 * time.Second}, {Bytes: gib}}
	workers := []abi.Worker{
		{Device: 0, Idle: true, FreeVRAM: 8 * gib, UsableVRAM: 20 * gib, Resident: []uint32{0}},
		{Device: 1, Idle: false, DeviceBusy: 1, FreeVRAM: 2 * gib, UsableVRAM: 20 * gib, Resident: []uint32{1}},
		{Device: 1, Idle: true, DeviceBusy: 1, FreeVRAM: 2 * gib, UsableVRAM: 20 * gib, Degraded: true},
	}
	jobs := []abi.Job{
		{Seq: 1, Class: abi.ClassBatch, Age: 5 * time.Second, VRAM: 2 * gib, BatchKey: 1, Models: []uint32{0}, Worker: abi.NoWorker},
		{Seq: 2, Class: abi.ClassInteractive, Age: 2 * time.Second, HasDeadline: true, Slack: time.Second, VRAM: 6 * gib, Models: []uint32{1}, Worker: abi.NoWorker},
		{Seq: 3, Class: abi.ClassBatch, Age: time.Second, VRAM: 2 * gib, BatchKey: 1, BatchVRAM: gib / 2, Models: []uint32{0}, Worker: abi.NoWorker},
	}
	running := []abi.Job{{Seq: 0, Class: abi.ClassBatch, Age: time.Minute, Models: []uint32{1}, Worker: 1, AtStepBoundary: true}}
	switch v.kind {
	case abi.KindEviction:
		in := &abi.EvictionInput{Need: 3 * gib, Free: gib, Entries: []abi.Entry{
			{Model: 0, Bytes: 2 * gib, SinceUse: time.Minute, SinceInsert: time.Hour, LoadCost: time.Second, Hits: 3},
			{Model: 1, Bytes: 6 * gib, SinceUse: time.Second, SinceInsert: time.Minute, LoadCost: 3 * time.Second, Pinned: true},
			{Model: 2, Worker: 1, Bytes: gib, SinceUse: time.Hour, SinceInsert: time.Hour},
		}, Ghosts: []abi.Ghost{{Model: 3, Ago: time.Minute}}, Wanted: []abi.Wanted{{Model: 3, Bytes: gib, Waiting: 2}}}
		for _, tc := range []struct {
			name string
			in   *abi.EvictionInput
		}{{"entries", in}, {"empty", &abi.EvictionInput{Need: gib}}} {
			st, err := decide(ctx, h, v, evictionOps, tc.in, &abi.EvictionOutput{}, &sc)
			if err := check(st, err, tc.name); err != nil {
				return err
			}
		}
	case abi.KindScheduling:
		for _, tc := range []struct {
			name string
			in   *abi.SchedulingInput
		}{
			{"queue", &abi.SchedulingInput{Models: models, Queued: jobs, Running: running, Workers: workers}},
			{"empty", &abi.SchedulingInput{Models: models, Workers: workers}},
		} {
			st, err := decide(ctx, h, v, schedulingOps, tc.in, &abi.SchedulingOutput{}, &sc)
			if err := check(st, err, tc.name); err != nil {
				return err
			}
		}
	case abi.KindBatching:
		for _, lead := range []uint32{0, 1} {
			in := &abi.BatchingInput{Lead: lead, Models: models, Jobs: jobs, Workers: workers}
			st, err := decide(ctx, h, v, batchingOps, in, &abi.BatchingOutput{}, &sc)
			if err := check(st, err, fmt.Sprintf("lead %d", lead)); err != nil {
				return err
			}
		}
	case abi.KindBalancing:
		for _, tc := range []struct {
			name string
			in   *abi.BalancingInput
		}{
			{"workers", &abi.BalancingInput{Models: models, Job: jobs[0], Workers: workers}},
			{"none idle", &abi.BalancingInput{Models: models, Job: jobs[1], Workers: workers[1:2]}},
		} {
			st, err := decide(ctx, h, v, balancingOps, tc.in, &abi.BalancingOutput{}, &sc)
			if err := check(st, err, tc.name); err != nil {
				return err
			}
		}
	case abi.KindRouting:
		for _, tc := range routingSamples(models, jobs[1]) {
			st, err := decide(ctx, h, v, routingOps, tc.in, &abi.RoutingOutput{}, &sc)
			if err := check(st, err, tc.name); err != nil {
				return err
			}
		}
	}
	return nil
}

// selfTestLimit is the call timeout of a load's self-test: ten live
// timeouts, at least a second. A module that loops is still stopped; one
// that a busy machine slowed down once is not refused for it.
func selfTestLimit(live time.Duration) time.Duration {
	return max(10*live, time.Second)
}
