package decision

import (
	"slices"
	"strings"
	"time"
)

// Class is a job's priority class. It is declared here, not in
// internal/job, so that the decision contract imports nothing of the
// kernel: the queue (internal/job) keeps jobs of these classes and
// re-exports the type and its values (job.Class, job.Interactive,
// job.Batch) for its many callers.
type Class string

// The priority classes. Interactive jobs go ahead of batch jobs.
const (
	Interactive Class = "interactive"
	Batch       Class = "batch"
)

// JobView is what scheduling and placement policies see of a queued job.
//
// A field feeds the ABI's job record (sdk/policy.Job) of the same name, or
// of the name its abi tag gives, through code internal/abigen generates
// (internal/policy/views_gen.go); abi:"-" marks a field that
// internal/policy/adapters.go converts by hand (interned, or derived).
type JobView struct {
	ID    string
	Class Class `abi:"-"`
	// Seq is the job's place in the queue's order across both classes (1
	// for the first job of the window, then 2, ...): submission order,
	// whatever the class, except for jobs with an explicit order
	// (job.Job.Order, from ComfyUI's number and front), which take their
	// place by it (job.CompareQueued). The kernel puts no class ahead of
	// another; that is the scheduling policy's choice. Seq is not the
	// job's job.Job.Seq and may change between scheduling rounds; compare,
	// do not keep it. Running jobs (Running) carry their job.Job.Seq.
	Seq        uint64
	Age        time.Duration
	DeadlineMS int64
	Models     []string `abi:"-"`
	Attempts   int
	// EstimatedVRAM is the sum of the job's models' VRAM footprints.
	EstimatedVRAM uint64 `abi:"VRAM"`

	// The fields below feed the WASM policies (internal/policy); zero values
	// mean "unknown" and the policies fall back to estimates.

	// ModelBytes are the VRAM footprints of Models, index for index.
	ModelBytes []uint64
	// LoadCost estimates, index for index with Models, the time to make each
	// model resident on a worker that lacks it (from the fastest tier that
	// holds it, at measured bandwidth).
	LoadCost []time.Duration
	// EstimatedCost is the job's estimated run time once its models are in.
	EstimatedCost time.Duration `abi:"EstCost"`
	// BatchKey is equal for jobs that may run in one batch (same models,
	// compatible parameters); "" means the job does not batch.
	BatchKey string `abi:"-"`
	// BatchVRAM is the extra VRAM one more batch member needs.
	BatchVRAM uint64
	// Running, Worker and AtStepBoundary describe a running job, for
	// preemption: the worker it runs on and whether it can stop now without
	// losing more than its current step.
	Running        bool
	Worker         string `abi:"-"`
	AtStepBoundary bool
	// RunTime is how long a running job has held its worker in its
	// current attempt (loading included).
	RunTime time.Duration
}

// WorkerView is what scheduling and placement policies see of a worker.
// Its fields feed the ABI's worker record (sdk/policy.Worker) as JobView's
// feed the job record.
type WorkerView struct {
	ID     string
	Device int
	// Idle is true when the worker can take a job now.
	Idle bool
	// DeviceBusy counts the busy workers on the same device.
	DeviceBusy int
	// Resident lists the models loaded in the worker and their VRAM bytes,
	// sorted by model. A list, not a map: the views are rebuilt for every
	// decision and read by each policy, and iterating a map cost a policy
	// adapter more than the decision itself (BENCHMARKS.md).
	Resident []ResidentModel `abi:"-"`
	// FreeVRAM is what the device's ledger can still hand out.
	FreeVRAM uint64
	// UsableVRAM is the device memory minus headroom.
	UsableVRAM uint64
	Degraded   bool
	// EstimatedWait is the time until the worker is expected to be free.
	EstimatedWait time.Duration `abi:"Wait"`
	// H2DBytesPerS is the device's measured host-to-device bandwidth.
	H2DBytesPerS uint64
}

// ResidentModel is one model loaded in a worker's process.
type ResidentModel struct {
	Model string
	Bytes int64
}

// ResidentBytes returns the VRAM bytes model holds in the worker and
// whether it is loaded there.
func (w *WorkerView) ResidentBytes(model string) (int64, bool) {
	for _, r := range w.Resident {
		if r.Model == model {
			return r.Bytes, true
		}
	}
	return 0, false
}

// ResidentList turns a model → bytes map into a view's sorted list,
// appending to dst.
func ResidentList(dst []ResidentModel, m map[string]int64) []ResidentModel {
	start := len(dst)
	for model, b := range m {
		dst = append(dst, ResidentModel{Model: model, Bytes: b})
	}
	slices.SortFunc(dst[start:], func(a, b ResidentModel) int { return strings.Compare(a.Model, b.Model) })
	return dst
}

// QueueWindow is how many queued jobs of each class a decision sees (the
// queue's window, job.Store.Window): each class's first QueueWindow jobs,
// merged in queue order. Per class, so that a long queue of one class
// never hides the other's head; merged, so that the window is not sorted
// by class behind the policy's back (sdk/policy/ABI.md §4.4).
const QueueWindow = 256

// Scheduler picks the next job to dispatch. It is asked whenever a worker is
// idle and jobs are queued. queued is the queue's window in queue order
// (JobView.Seq ascending), classes mixed.
//
// Implementations must not keep the slices; they may be reused.
type Scheduler interface {
	Next(queued []JobView, workers []WorkerView) (jobID string, ok bool)
}

// Planner is implemented by schedulers whose policy also names running
// jobs to preempt (internal/policy's Scheduler). next are queued jobs in the
// order the policy would dispatch them; preempt are jobs of running to stop
// so that next[0] gets a worker. The dispatcher finds it by type assertion
// on its Scheduler and asks it only when no worker is idle and a job of a
// higher class than some running job waits (Core.Preempt); running then
// holds only the jobs it may preempt. Implementations must not keep the
// slices.
type Planner interface {
	PlanIDs(queued, running []JobView, workers []WorkerView) (next, preempt []string)
}

// PlannedOrder returns queued in the order the scheduler would dispatch
// it, for the lookahead, which prefetches the models of the jobs that run
// next: the plan of a Planner (the policy host's scheduler), the jobs it
// leaves out after, in their order; interactive jobs first, each class in
// queue order (ClassRank, then Seq), for any other
// scheduler, or when the planner plans nothing. queued itself is not
// changed.
func PlannedOrder(s Scheduler, queued []JobView, workers []WorkerView) []JobView {
	out := slices.Clone(queued)
	var next []string
	if p, ok := s.(Planner); ok {
		next, _ = p.PlanIDs(queued, nil, workers)
	}
	if len(next) == 0 {
		// No plan (not a Planner, or one that plans nothing now, as the
		// experiment router during an experiment).
		slices.SortStableFunc(out, func(a, b JobView) int {
			if c := a.ClassRank() - b.ClassRank(); c != 0 {
				return c
			}
			return cmpSeq(a.Seq, b.Seq)
		})
		return out
	}
	place := make(map[string]int, len(next))
	for i, id := range next {
		if _, dup := place[id]; !dup {
			place[id] = i
		}
	}
	at := func(j JobView) int {
		if i, ok := place[j.ID]; ok {
			return i
		}
		return len(next)
	}
	slices.SortStableFunc(out, func(a, b JobView) int { return at(a) - at(b) })
	return out
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Balancer picks the worker for a job among the idle ones.
type Balancer interface {
	Place(j JobView, workers []WorkerView) (workerID string, ok bool)
}

// Batcher chooses the jobs that run together with lead, the job the
// scheduler picked, as one batch on one worker. It returns their IDs with
// lead first; a wait > 0 asks the dispatcher to hold lead back up to that
// long for more compatible jobs (the dispatcher may run it anyway).
type Batcher interface {
	Batch(lead JobView, queued []JobView, workers []WorkerView) (jobIDs []string, wait time.Duration)
}

// ClassRank orders the classes: 0 for an interactive job, 1 for a batch
// job. Preemption (dispatch.Core.Preempt) stops only a job of a higher
// rank for one of a lower rank, and the lookahead orders an unplanned
// queue by it.
func (j JobView) ClassRank() int {
	if j.Class == Interactive {
		return 0
	}
	return 1
}
