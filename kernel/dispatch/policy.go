package dispatch

import (
	"sort"
	"time"

	"github.com/kiln-gpu/kiln/kernel/decision"
	"github.com/kiln-gpu/kiln/kernel/job"
	"github.com/kiln-gpu/kiln/kernel/tier"
)

// NoBatching runs every job alone. It is the native batcher and the
// fallback of WASM batching policies.
type NoBatching struct{}

var _ decision.Batcher = NoBatching{}

// Batch returns lead alone, at once.
func (NoBatching) Batch(lead decision.JobView, _ []decision.JobView, _ []decision.WorkerView) ([]string, time.Duration) {
	return []string{lead.ID}, 0
}

// PriorityFIFO runs interactive jobs before batch jobs, each class in
// queue order (JobView.Seq: submission order unless a job has an explicit
// order). It is the native scheduler until WASM policies land.
type PriorityFIFO struct{}

var _ decision.Scheduler = PriorityFIFO{}

// Next returns the oldest interactive job, else the oldest batch job.
func (PriorityFIFO) Next(queued []decision.JobView, _ []decision.WorkerView) (string, bool) {
	best := -1
	for i, j := range queued {
		if best < 0 || rank(j) < rank(queued[best]) || (rank(j) == rank(queued[best]) && j.Seq < queued[best].Seq) {
			best = i
		}
	}
	if best < 0 {
		return "", false
	}
	return queued[best].ID, true
}

func rank(j decision.JobView) int {
	if j.Class == job.Interactive {
		return 0
	}
	return 1
}

// LeastLoaded places a job on the idle worker whose device has the fewest
// busy workers; ties go to the worker that already holds more of the job's
// model bytes, then to the device with more free VRAM. Degraded devices are
// used only when nothing else is idle, and devices whose usable memory cannot
// hold the job at all are never chosen.
type LeastLoaded struct{}

var _ decision.Balancer = LeastLoaded{}

// Place returns the chosen worker.
func (LeastLoaded) Place(j decision.JobView, workers []decision.WorkerView) (string, bool) {
	cands := make([]decision.WorkerView, 0, len(workers))
	for _, w := range workers {
		if w.Idle && (w.UsableVRAM == 0 || j.EstimatedVRAM <= w.UsableVRAM) {
			cands = append(cands, w)
		}
	}
	if len(cands) == 0 {
		return "", false
	}
	resident := func(w decision.WorkerView) int64 {
		var n int64
		for _, m := range j.Models {
			b, _ := w.ResidentBytes(m)
			n += b
		}
		return n
	}
	sort.SliceStable(cands, func(a, b int) bool {
		x, y := cands[a], cands[b]
		if x.Degraded != y.Degraded {
			return !x.Degraded
		}
		if x.DeviceBusy != y.DeviceBusy {
			return x.DeviceBusy < y.DeviceBusy
		}
		if rx, ry := resident(x), resident(y); rx != ry {
			return rx > ry
		}
		if x.FreeVRAM != y.FreeVRAM {
			return x.FreeVRAM > y.FreeVRAM
		}
		return x.ID < y.ID
	})
	return cands[0].ID, true
}

// LRU evicts the least recently used unpinned models first; it is the
// tiers' native LRU.
type LRU = tier.LRU
