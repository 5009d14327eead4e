package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// LoadSamples is how many seeded random inputs a load runs after the
// fixed self-test. The fixed samples are few and documented, so a module
// could recognise them and answer them well while it misbehaves on live
// traffic; random ones, from a seed drawn per load, cannot be
// special-cased. The fault counter and rollback remain the line of defence
// that counts: no sample proves a policy right.
const LoadSamples = 16

// sampler draws inputs for one kind from a seed. Consecutive inputs form a
// trace: the host carries the state words from one decision to the next
// (decide does), and an eviction sample keeps the entries that were not
// evicted, with the tags the policy set on them, so that a policy sees the
// consequences of its answers as it does in a node.
type sampler struct {
	rng     *rand.Rand
	entries []abi.Entry // eviction: the cache after the last decision
	seq     uint64
}

func newSampler(seed uint64) *sampler {
	return &sampler{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seq: 1 + seed%1000}
}

const gib = 1 << 30

func (s *sampler) dur(maxD time.Duration) time.Duration {
	return time.Duration(s.rng.Int64N(int64(maxD)))
}

func (s *sampler) models() []abi.ModelInfo {
	ms := make([]abi.ModelInfo, 1+s.rng.IntN(8))
	for i := range ms {
		ms[i] = abi.ModelInfo{Bytes: uint64(1+s.rng.IntN(24)) * gib / 2}
		if s.rng.IntN(4) != 0 {
			ms[i].LoadCost = s.dur(10 * time.Second)
		}
	}
	return ms
}

// subset returns 0 to max distinct model ids of n, sorted.
func (s *sampler) subset(n, lo, hi int) []uint32 {
	k := min(lo+s.rng.IntN(hi-lo+1), n)
	out := make([]uint32, 0, k)
	for _, i := range s.rng.Perm(n)[:k] {
		out = append(out, uint32(i))
	}
	slices.Sort(out)
	return out
}

func (s *sampler) workers(ms []abi.ModelInfo, lo int) []abi.Worker {
	ws := make([]abi.Worker, lo+s.rng.IntN(7-lo))
	for i := range ws {
		usable := uint64(0)
		if s.rng.IntN(5) != 0 {
			usable = uint64(16+s.rng.IntN(65)) * gib
		}
		ws[i] = abi.Worker{Device: uint32(s.rng.IntN(3)), Idle: s.rng.IntN(3) != 0, Degraded: s.rng.IntN(8) == 0,
			UsableVRAM: usable, FreeVRAM: uint64(s.rng.IntN(40)) * gib, Resident: s.subset(len(ms), 0, 3)}
		if !ws[i].Idle {
			ws[i].Wait = s.dur(time.Minute)
		}
		if s.rng.IntN(2) == 0 {
			ws[i].H2DBytesPerS = uint64(5+s.rng.IntN(50)) << 30
		}
	}
	for i := range ws {
		for j := range ws {
			if ws[j].Device == ws[i].Device && !ws[j].Idle {
				ws[i].DeviceBusy++
			}
		}
	}
	return ws
}

func (s *sampler) job(ms []abi.ModelInfo) abi.Job {
	s.seq += uint64(1 + s.rng.IntN(3))
	j := abi.Job{Seq: s.seq, Class: abi.Class(s.rng.IntN(2)), Attempts: uint32(s.rng.IntN(2)), Age: s.dur(2 * time.Minute),
		EstCost: s.dur(30 * time.Second), Models: s.subset(len(ms), 1, 3), Worker: abi.NoWorker}
	for _, m := range j.Models {
		j.VRAM += ms[m].Bytes
	}
	if s.rng.IntN(3) == 0 {
		j.HasDeadline, j.Slack = true, s.dur(time.Minute)-20*time.Second
	}
	if s.rng.IntN(2) == 0 {
		j.BatchKey, j.BatchVRAM = uint32(1+s.rng.IntN(3)), uint64(s.rng.IntN(4))*gib/4
	}
	return j
}

func (s *sampler) jobs(ms []abi.ModelInfo, lo, hi int) []abi.Job {
	js := make([]abi.Job, lo+s.rng.IntN(hi-lo+1))
	for i := range js {
		js[i] = s.job(ms)
	}
	return js
}

// running returns jobs on the busy workers of ws.
func (s *sampler) running(ms []abi.ModelInfo, ws []abi.Worker) []abi.Job {
	var out []abi.Job
	for i := range ws {
		if !ws[i].Idle && s.rng.IntN(2) == 0 {
			j := s.job(ms)
			j.Seq -= 1000 // submitted before the queue
			j.Worker, j.AtStepBoundary = uint32(i), s.rng.IntN(2) == 0
			out = append(out, j)
		}
	}
	return out
}

// eviction returns the next input of an eviction trace: the surviving
// entries of the last one (older by a little, a new entry or two), and a
// need that is zero in a third of the calls — the dispatcher's prefetch
// lookahead, which evicts nothing.
func (s *sampler) eviction() *abi.EvictionInput {
	step := s.dur(10 * time.Second)
	for i := range s.entries {
		e := &s.entries[i]
		e.SinceUse += step
		e.SinceInsert += step
		e.Pinned = s.rng.IntN(5) == 0
		if s.rng.IntN(3) == 0 {
			e.SinceUse, e.Hits = 0, e.Hits+1
		}
	}
	for range s.rng.IntN(3) {
		if len(s.entries) < 12 {
			s.entries = append(s.entries, abi.Entry{Model: uint32(len(s.entries) + 20), Worker: uint32(s.rng.IntN(3)),
				Bytes: uint64(1+s.rng.IntN(16)) * gib / 2, LoadCost: s.dur(5 * time.Second)})
		}
	}
	in := &abi.EvictionInput{Entries: slices.Clone(s.entries)}
	if s.rng.IntN(2) == 0 {
		// The recent demand (ABI 1.3) in half the calls; the others are
		// what a 1.2 host sends.
		in.RecentDemand = make([]float64, len(in.Entries))
		for i := range in.RecentDemand {
			in.RecentDemand[i] = s.rng.Float64() * 8
		}
	}
	if s.rng.IntN(3) != 0 {
		in.Need = uint64(1+s.rng.IntN(12)) * gib / 2
	} else {
		in.Free = uint64(s.rng.IntN(20)) * gib
	}
	for range s.rng.IntN(4) {
		in.Ghosts = append(in.Ghosts, abi.Ghost{Model: uint32(100 + s.rng.IntN(8)), Ago: s.dur(time.Hour)})
	}
	for i := range s.rng.IntN(4) {
		in.Wanted = append(in.Wanted, abi.Wanted{Model: uint32(200 + i), Bytes: uint64(1+s.rng.IntN(8)) * gib / 2,
			LoadCost: s.dur(5 * time.Second), Waiting: uint32(1 + s.rng.IntN(4))})
	}
	return in
}

// evicted applies an eviction answer to the trace: victims leave, tags
// stick to the entries that stay.
func (s *sampler) evicted(out *abi.EvictionOutput) {
	for _, t := range out.Tags {
		if int(t.Entry) < len(s.entries) {
			s.entries[t.Entry].Tag = t.Tag
		}
	}
	gone := make([]bool, len(s.entries))
	for _, v := range out.Victims {
		if int(v) < len(gone) {
			gone[v] = true
		}
	}
	kept := s.entries[:0]
	for i, e := range s.entries {
		if !gone[i] {
			kept = append(kept, e)
		}
	}
	s.entries = kept
}

// SampleInput returns the i-th input (0-based) of the trace seed draws for
// kind k, as the host sends it to a module: what `kiln policy test
// --print-inputs` shows. Eviction inputs depend on the answers before
// them; this one assumes every earlier answer evicted nothing.
func SampleInput(k abi.Kind, seed uint64, i int) any {
	s := newSampler(seed)
	var in any
	for range i + 1 {
		in = s.next(k)
	}
	return in
}

func (s *sampler) next(k abi.Kind) any {
	switch k {
	case abi.KindEviction:
		return s.eviction()
	case abi.KindScheduling:
		ms := s.models()
		ws := s.workers(ms, 0)
		return &abi.SchedulingInput{Models: ms, Queued: s.jobs(ms, 0, 8), Running: s.running(ms, ws), Workers: ws}
	case abi.KindBatching:
		ms := s.models()
		js := s.jobs(ms, 1, 8)
		return &abi.BatchingInput{Lead: uint32(s.rng.IntN(len(js))), Models: ms, Jobs: js, Workers: s.workers(ms, 0)}
	case abi.KindBalancing:
		ms := s.models()
		return &abi.BalancingInput{Models: ms, Job: s.job(ms), Workers: s.workers(ms, 0)}
	case abi.KindRouting:
		ms := s.models()
		return &abi.RoutingInput{Random: s.rng.Uint64(), Models: ms, Job: s.job(ms), Nodes: s.nodes(ms)}
	}
	return nil
}

// TraceResult counts a trace's decisions by outcome.
type TraceResult struct {
	Seed       uint64 `json:"seed"`
	Decisions  int    `json:"decisions"`
	OK         int    `json:"ok"`
	NoDecision int    `json:"no_decision"`
}

// runTrace asks v n inputs of the trace seed draws, through decide: the
// encoding, call, decoding and validation of a live decision. It stops at
// the first fault, whose error names the sample. limit, when set, replaces
// the call timeout (callInfo.limit).
func (h *Host) runTrace(ctx context.Context, v *version, seed uint64, n int, limit time.Duration) (TraceResult, error) {
	s := newSampler(seed)
	r := TraceResult{Seed: seed}
	sc := scratch{limit: limit}
	for i := range n {
		var st abi.Status
		var err error
		switch in := s.next(v.kind).(type) {
		case *abi.EvictionInput:
			out := &abi.EvictionOutput{}
			if st, err = decide(ctx, h, v, evictionOps, in, out, &sc); err == nil && st == abi.StatusOK {
				s.evicted(out)
			}
		case *abi.SchedulingInput:
			st, err = decide(ctx, h, v, schedulingOps, in, &abi.SchedulingOutput{}, &sc)
		case *abi.BatchingInput:
			st, err = decide(ctx, h, v, batchingOps, in, &abi.BatchingOutput{}, &sc)
		case *abi.BalancingInput:
			st, err = decide(ctx, h, v, balancingOps, in, &abi.BalancingOutput{}, &sc)
		case *abi.RoutingInput:
			st, err = decide(ctx, h, v, routingOps, in, &abi.RoutingOutput{}, &sc)
		}
		r.Decisions++
		if err != nil {
			return r, fmt.Errorf("random sample %d of %d (seed %d; `kiln policy test FILE --kind %s --seed %d` replays it): %w", i, n, seed, v.kind, seed, err)
		}
		if st == abi.StatusOK {
			r.OK++
		} else {
			r.NoDecision++
		}
	}
	return r, nil
}
