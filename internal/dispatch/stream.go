package dispatch

import (
	"slices"
	"sort"
	"time"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/worker"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// minResidentShare bounds weight streaming: a streamed model keeps at
// least 1/minResidentShare of its weights on the device, room for the
// layers that run and those that arrive next (a Flux block is 1/57 of the
// model; two of them with their buffers stay well under 1/8).
const minResidentShare = 8

// streamPlan lets the stages of p that do not fit in room run with weight
// streaming (docs/stages.md, "Weight streaming"): the stage's largest
// models keep only part of their weights on the device, no less than
// 1/minResidentShare of each, and the rest stays in host memory (the L2
// mapping) and crosses to the device every sampler step. When a stage
// does not fit even so, p is returned as it was: the job is refused.
// Streaming is priced (Plan.StreamTime), so that it is a costlier
// placement, not a refusal.
func streamPlan(p Plan, room uint64) Plan {
	if room == 0 || p.Peak() <= room {
		return p
	}
	out := Plan{Stages: make([]PlanStage, len(p.Stages))}
	for k, s := range p.Stages {
		if s.Bytes() <= room {
			out.Stages[k] = s
			continue
		}
		s.ModelBytes = slices.Clone(s.ModelBytes)
		s.StreamedBytes = make([]uint64, len(s.Models))
		order := make([]int, len(s.Models))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return s.ModelBytes[order[a]] > s.ModelBytes[order[b]] })
		over := s.Bytes() - room
		for _, i := range order {
			if over == 0 {
				break
			}
			spare := s.ModelBytes[i] - s.ModelBytes[i]/minResidentShare
			n := min(over, spare)
			s.ModelBytes[i] -= n
			s.StreamedBytes[i] = n
			over -= n
		}
		if over > 0 {
			return p // a stage cannot fit even streamed: the job is refused as it was
		}
		out.Stages[k] = s
	}
	return out
}

// streamed is the part of model's weights the plan streams, 0 for none.
func (p Plan) streamed(model string) uint64 {
	for _, s := range p.Stages {
		if i := slices.Index(s.Models, model); i >= 0 && i < len(s.StreamedBytes) {
			return s.StreamedBytes[i]
		}
	}
	return 0
}

// Streamed is the bytes the plan streams over all its stages.
func (p Plan) Streamed() uint64 {
	var b uint64
	for _, s := range p.Stages {
		for _, n := range s.StreamedBytes {
			b += n
		}
	}
	return b
}

// StreamTime is what weight streaming adds to the job's run time: each
// stage's streamed bytes moved once per sampler step of the stage
// (cost.StreamTime), once for a stage without a sampler.
func (p Plan) StreamTime(c cost.Config, dev cost.Device) time.Duration {
	var d time.Duration
	for _, s := range p.Stages {
		var b int64
		for _, n := range s.StreamedBytes {
			b += int64(n)
		}
		d += c.StreamTime(b, max(s.Steps, 1), dev)
	}
	return d
}

// poolCaps reports whether every worker of the pool can stream weights
// (wire.CapabilityStream): a plan is made before its worker is chosen, so
// it streams only where any worker could run it; and whether that is
// known at all: the node has no pool, or one of its workers has said
// hello (before that its capabilities are unknown).
func (d *Dispatcher) poolCaps() (streams, known bool) {
	if d.opts.Pool == nil {
		return false, true
	}
	streams = true
	for _, in := range d.opts.Pool.Infos() {
		w := d.opts.Pool.Get(in.ID)
		if w == nil || (in.State != worker.Ready && in.State != worker.Busy) {
			continue // not said hello yet: its capabilities are unknown
		}
		known = true
		streams = streams && w.Speaks(wire.CapabilityStream)
	}
	return streams && known, known
}

// fitKey is what a job's plan depends on beyond the job, the catalog and
// the measured activations: whether the workers stream weights and the
// room a device gives one job (fitPlan). The dispatcher keeps the plan it
// made for each job with the key it was made under and makes it again when
// the key has changed: a plan made while no worker had said hello (at
// start, or while the queue a restart recovered waits for its workers)
// streams nothing, and its peak would fail a job that the same node
// admits once its workers are up.
type fitKey struct {
	streams bool
	known   bool // poolCaps: false while no worker has said hello
	room    uint64
}

// fitNow is the node's fitKey as the pool and the ledgers are now.
func (d *Dispatcher) fitNow() fitKey {
	_, room := d.room()
	streams, known := d.poolCaps()
	return fitKey{streams: streams, known: known, room: room}
}

// refreshFit takes the node's fitKey again: at every worker's hello and
// exit (the pool's hooks) and before each look at the queue, so that no
// plan the decision core judges a job by was made under a stale one.
func (d *Dispatcher) refreshFit() fitKey {
	k := d.fitNow()
	d.fit.Store(&k)
	return k
}

// currentFit is the fitKey last taken (refreshFit).
func (d *Dispatcher) currentFit() fitKey {
	if k := d.fit.Load(); k != nil {
		return *k
	}
	return d.refreshFit()
}

// fitPlan is what a job's plan becomes on this node as it is now
// (fitPlanFor with fitNow).
func (d *Dispatcher) fitPlan(p Plan) Plan {
	return d.fitPlanFor(p, d.fitNow())
}

// fitPlanFor is what a job's plan becomes on a node whose workers and
// devices are as k says: its activations refined by what runs measured,
// its conversions (tiers.convert), then weight streaming for what still
// fits no device, when the workers stream.
func (d *Dispatcher) fitPlanFor(p Plan, k fitKey) Plan {
	p = d.convertPlan(d.activations.refine(p))
	if !k.streams {
		return p
	}
	return streamPlan(p, k.room)
}

// loadSpec is how one model of a plan is loaded.
type loadSpec struct {
	// WeightDType is the graph loader's cast, ConvertTo the tiers'
	// conversion, VRAMBudget the resident part of a streamed model (0: all).
	WeightDType, ConvertTo string
	VRAMBudget             int64
}

func (p Plan) loadSpec(model string) loadSpec {
	ls := loadSpec{WeightDType: p.dtype(model), ConvertTo: p.convertTo(model)}
	if p.streamed(model) > 0 {
		ls.VRAMBudget = int64(p.Bytes(model))
	}
	return ls
}
