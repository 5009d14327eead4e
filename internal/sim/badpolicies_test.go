package sim

import (
	"cmp"
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Deliberately bad policies, one per kind, that the experiments' error-rate
// checks plant as canary candidates (expbench_test.go). Each is plausible
// code with one wrong idea, so that its effect on a gated metric is real
// and measurable by running it alone on the same workload.
func init() {
	policy.RegisterNative(abi.KindScheduling, "test-batch-first", func() any { return batchFirst{} })
	policy.RegisterNative(abi.KindBalancing, "test-busiest", func() any { return busiest{} })
	policy.RegisterNative(abi.KindEviction, "test-mru", func() any { return mru{} })
	policy.RegisterNative(abi.KindBatching, "test-hold", func() any { return hold{wait: 10 * time.Second} })
}

// batchFirst serves batch jobs before interactive ones, each class in
// submission order: interactive jobs wait behind every batch backlog.
type batchFirst struct{}

var _ abi.Scheduler = batchFirst{}

func (batchFirst) Schedule(in *abi.SchedulingInput, out *abi.SchedulingOutput) abi.Status {
	idx := make([]uint32, len(in.Queued))
	for i := range idx {
		idx[i] = uint32(i)
	}
	slices.SortStableFunc(idx, func(a, b uint32) int {
		ja, jb := in.Queued[a], in.Queued[b]
		if ia, ib := ja.Class == abi.ClassInteractive, jb.Class == abi.ClassInteractive; ia != ib {
			if ia {
				return 1
			}
			return -1
		}
		return cmp.Compare(ja.Seq, jb.Seq)
	})
	out.Dispatch = idx
	return abi.StatusOK
}

// busiest places a job on the idle worker whose device is busiest and
// that holds the fewest of the job's bytes: no affinity, the most loads.
type busiest struct{}

var _ abi.Balancer = busiest{}

func (busiest) Balance(in *abi.BalancingInput, out *abi.BalancingOutput) abi.Status {
	best, bestRes := -1, uint64(0)
	for i := range in.Workers {
		w := &in.Workers[i]
		if !w.Idle || !abi.Fits(&in.Job, w) {
			continue
		}
		var res uint64
		for _, m := range in.Job.Models {
			if slices.Contains(w.Resident, m) {
				res += in.Models[m].Bytes
			}
		}
		if b := &in.Workers[max(best, 0)]; best < 0 || w.DeviceBusy > b.DeviceBusy || w.DeviceBusy == b.DeviceBusy && res < bestRes {
			best, bestRes = i, res
		}
	}
	if best < 0 {
		return abi.StatusNoDecision
	}
	out.Worker = uint32(best)
	return abi.StatusOK
}

// mru evicts the most recently used entries first: the models the next
// jobs most likely need.
type mru struct{}

var _ abi.Evictor = mru{}

func (mru) Evict(in *abi.EvictionInput, out *abi.EvictionOutput) abi.Status {
	idx := make([]uint32, 0, len(in.Entries))
	for i := range in.Entries {
		if !in.Entries[i].Pinned {
			idx = append(idx, uint32(i))
		}
	}
	slices.SortStableFunc(idx, func(a, b uint32) int { return cmp.Compare(in.Entries[a].SinceUse, in.Entries[b].SinceUse) })
	free := in.Free
	for _, i := range idx {
		if free >= in.Need {
			break
		}
		out.Victims = append(out.Victims, i)
		free += in.Entries[i].Bytes
	}
	return abi.StatusOK
}

// hold holds every job back until it is wait old, hoping for batch
// partners that it then does not take: pure added latency.
type hold struct{ wait time.Duration }

var _ abi.Batcher = hold{}

func (h hold) Batch(in *abi.BatchingInput, out *abi.BatchingOutput) abi.Status {
	if age := in.Jobs[in.Lead].Age; age < h.wait {
		out.Wait = h.wait - age
		return abi.StatusOK
	}
	out.Batch = []uint32{in.Lead}
	return abi.StatusOK
}
