package policy

import (
	"errors"
	"strconv"
	"time"
)

// ABIMajor and ABIMinor are the version of the ABI this SDK speaks. A host
// accepts a module whose major equals its own and whose minor is not above
// its own; see ABI.md.
const (
	ABIMajor = 1
	ABIMinor = 3
)

// Kind is what a policy decides.
type Kind uint32

// The five kinds of policy. Routing (since ABI 1.2) is the cluster's
// decision: which node takes a job; the other four are one node's.
const (
	KindEviction   Kind = 1
	KindScheduling Kind = 2
	KindBatching   Kind = 3
	KindBalancing  Kind = 4
	KindRouting    Kind = 5
)

// Kinds lists every kind in ABI order.
var Kinds = []Kind{KindEviction, KindScheduling, KindBatching, KindBalancing, KindRouting}

// String returns the kind's name as the API and CLI spell it.
func (k Kind) String() string {
	switch k {
	case KindEviction:
		return "eviction"
	case KindScheduling:
		return "scheduling"
	case KindBatching:
		return "batching"
	case KindBalancing:
		return "balancing"
	case KindRouting:
		return "routing"
	}
	return "kind(" + itoa(int64(k)) + ")"
}

// Hook is the name of the export that implements the kind.
func (k Kind) Hook() string {
	switch k {
	case KindEviction:
		return "kiln_evict"
	case KindScheduling:
		return "kiln_schedule"
	case KindBatching:
		return "kiln_batch"
	case KindBalancing:
		return "kiln_balance"
	case KindRouting:
		return "kiln_route"
	}
	return ""
}

// ParseKind parses a kind name.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, errors.New("unknown policy kind " + strconv.Quote(s) + " (want eviction, scheduling, batching, balancing or routing)")
}

// Status is a hook's verdict. A soft error is a status, never a trap.
type Status uint32

// The statuses a hook returns.
const (
	// StatusOK means the output holds a decision.
	StatusOK Status = 0
	// StatusNoDecision means there is nothing to do now (no job to run, no
	// suitable worker, no victims that would be enough).
	StatusNoDecision Status = 1
	// StatusUnsupported means the module does not implement this kind.
	StatusUnsupported Status = 2
	// StatusError means the policy failed; the host uses its fallback.
	StatusError Status = 3
)

// Class is a job's priority class.
type Class uint32

// The priority classes.
const (
	ClassInteractive Class = 0
	ClassBatch       Class = 1
)

// NoWorker marks a job that runs on no worker, and a balancing answer that
// names none.
const NoWorker = ^uint32(0)

// Common is what every input carries.
type Common struct {
	// Now is the decision's time in Unix nanoseconds (virtual time in the
	// simulator). Policies need it rarely: every age in the input is
	// already relative to it.
	Now int64
	// State is the policy's own state: the words its last output returned
	// for this kind (zero at first). GDSF keeps its inflation value here.
	State [4]uint64
	// Params are the values of the tunable parameters the policy declares,
	// in declaration order.
	Params []float64

	// Decoding scratch, reused so that a guest's steady state allocates
	// nothing (a Go guest that allocates per call pays for GC assists).
	spans []span
	pool  []uint32
}

// Param returns Params[i], or def when the host sent fewer values.
func (c *Common) Param(i int, def float64) float64 {
	if i < len(c.Params) {
		return c.Params[i]
	}
	return def
}

// The records. Each type marked //abi:record (with its size in bytes) is
// a fixed layout of the ABI; its fields' abi tags are the layout (offset;
// bit=N for a bool, one bit of the u32 flags word at that offset; a
// []uint32 is a list, a pool offset and a count; since=1.M for a field a
// minor version added; ts= and tscount= where the AssemblyScript getter is
// not named after the field) and their doc tags their text in ABI.md.
// internal/abigen writes the codec's record functions (records_gen.go),
// ABI.md's tables and the AssemblyScript accessors from them:
//
//	go generate ./internal/abigen

// ModelInfo is what the input says about one model; models are named by
// their index in the input's Models table.
//
//abi:record size=16 ts=Model
type ModelInfo struct {
	// Bytes is the model's VRAM footprint.
	Bytes uint64 `abi:"0" doc:"bytes: VRAM footprint"`
	// LoadCost is the estimated time to make it resident on a worker that
	// lacks it, from the fastest tier that holds it, at measured bandwidth.
	LoadCost time.Duration `abi:"8" doc:"load_cost_ns: estimated time to make it resident on a worker that lacks it, from the fastest tier holding it at measured bandwidth; 0 unknown"`
}

// Job is a queued or running job.
//
//abi:record size=80
type Job struct {
	Seq      uint64 `abi:"0" doc:"seq: queued jobs, their place in queue order across both classes (§4.4); running jobs, their submission number"`
	Class    Class  `abi:"48,ts=priorityClass" doc:"class: 0 interactive, 1 batch"`
	Attempts uint32 `abi:"60" doc:"attempts"`
	// Age is the time since submission.
	Age time.Duration `abi:"8" doc:"age_ns"`
	// Slack is the time left until the job's deadline (negative when it is
	// late); meaningful only when HasDeadline.
	Slack       time.Duration `abi:"16" doc:"slack_ns: time left to the deadline (negative when late); valid when flag bit 0"`
	HasDeadline bool          `abi:"52,bit=0" doc:"has deadline"`
	// EstCost is the estimated run time once its models are resident.
	EstCost time.Duration `abi:"24" doc:"est_cost_ns: estimated run time"`
	// VRAM is the sum of its models' footprints.
	VRAM uint64 `abi:"32" doc:"vram: sum of its models' footprints"`
	// BatchVRAM is the extra VRAM one more member of a batch costs.
	BatchVRAM uint64 `abi:"40" doc:"batch_vram: extra VRAM for one more batch member"`
	// BatchKey groups jobs with the same models and compatible parameters;
	// 0 means the job does not batch.
	BatchKey uint32 `abi:"56" doc:"batch_key: equal for jobs that may share a batch; 0 = does not batch"`
	// Models are indices into the input's Models table. Decoded lists
	// share one array, valid until the next call; appending to one copies.
	Models []uint32 `abi:"64,tscount=modelCount" doc:"models"`
	// Worker is the index of the worker that runs it (running jobs), or
	// NoWorker.
	Worker uint32 `abi:"72" doc:"worker: index of the worker running it, or 0xFFFFFFFF"`
	// AtStepBoundary says a running job can be preempted now without
	// losing work beyond its current step.
	AtStepBoundary bool `abi:"52,bit=1" doc:"at a step boundary (running jobs)"`
}

// Worker is one worker process and its device.
//
//abi:record size=56
type Worker struct {
	Device uint32 `abi:"32" doc:"device"`
	// Idle is true when the worker can take a job now.
	Idle     bool `abi:"36,bit=0" doc:"idle"`
	Degraded bool `abi:"36,bit=1" doc:"degraded"`
	// DeviceBusy counts the busy workers on the same device.
	DeviceBusy uint32 `abi:"40" doc:"device_busy: busy workers on its device"`
	FreeVRAM   uint64 `abi:"0" doc:"free_vram"`
	UsableVRAM uint64 `abi:"8" doc:"usable_vram (device memory minus headroom; 0 unknown)"`
	// Wait is the estimated time until the worker is free.
	Wait time.Duration `abi:"16" doc:"wait_ns: estimated time until free"`
	// H2DBytesPerS is the measured host-to-device bandwidth (0: unknown).
	H2DBytesPerS uint64 `abi:"24" doc:"h2d_bytes_per_s (0 unknown)"`
	// Resident are the models in its VRAM (indices into Models), in the
	// same shared array as Job.Models.
	Resident []uint32 `abi:"44" doc:"resident models"`
}

// Entry is one cached model an eviction policy may drop.
//
//abi:record size=56
type Entry struct {
	// Model is interned: equal ids are the same model within one input.
	Model uint32 `abi:"40" doc:"model"`
	// Worker distinguishes copies of one model held by different workers.
	Worker      uint32        `abi:"44" doc:"worker (copies of one model on different workers differ here)"`
	Bytes       uint64        `abi:"0" doc:"bytes"`
	SinceUse    time.Duration `abi:"8" doc:"since_use_ns"`
	SinceInsert time.Duration `abi:"16" doc:"since_insert_ns"`
	// LoadCost is the measured time it took to load.
	LoadCost time.Duration `abi:"24" doc:"load_cost_ns (measured)"`
	Hits     uint32        `abi:"48" doc:"hits"`
	Pinned   bool          `abi:"52,bit=0" doc:"pinned"`
	// Tag is the policy's own per-entry word, as its last output set it
	// (0 for a new entry).
	Tag uint64 `abi:"32" doc:"tag (the policy's own word for this entry, §5.1; 0 for a new entry)"`
}

// Ghost is a model evicted recently (S3-FIFO's ghost queue, kept by the host).
//
//abi:record size=16
type Ghost struct {
	Model uint32        `abi:"8" doc:"model"`
	Ago   time.Duration `abi:"0" doc:"ago_ns"`
}

// Wanted is a model that queued jobs need and that is not cached here: a
// candidate for prefetch.
//
//abi:record size=24
type Wanted struct {
	Model    uint32        `abi:"16" doc:"model"`
	Bytes    uint64        `abi:"0" doc:"bytes"`
	LoadCost time.Duration `abi:"8" doc:"load_cost_ns"`
	// Waiting counts the queued jobs that need it.
	Waiting uint32 `abi:"20" doc:"waiting (queued jobs that need it)"`
}

// TagUpdate sets an entry's Tag for the next decision.
type TagUpdate struct {
	Entry uint32
	Tag   uint64
}

// EvictionInput asks which entries to drop so that Need more bytes fit.
type EvictionInput struct {
	Common
	Need    uint64
	Free    uint64
	Entries []Entry
	Ghosts  []Ghost
	Wanted  []Wanted
	// RecentDemand (since ABI 1.3) is, index for index with Entries, the
	// kernel's decayed count of recent jobs asking for each entry's model:
	// each job adds 1 and a count halves every 30 minutes, whichever tier
	// served the job, so it outlives the entry's evictions, unlike Hits.
	// Empty when the host sends none (a 1.2 host); read it with
	// EntryDemand.
	RecentDemand []float64
}

// EntryDemand is Entries[i]'s recent demand, 0 when the input has none.
func (in *EvictionInput) EntryDemand(i int) float64 {
	if i < len(in.RecentDemand) {
		return in.RecentDemand[i]
	}
	return 0
}

// EvictionOutput names the victims (indices into Entries), optionally the
// models to prefetch (indices into Wanted) and tag updates.
type EvictionOutput struct {
	State    [4]uint64
	Victims  []uint32
	Prefetch []uint32
	Tags     []TagUpdate
}

// SchedulingInput asks which queued jobs to dispatch next.
type SchedulingInput struct {
	Common
	Models  []ModelInfo
	Queued  []Job // in submission order
	Running []Job
	Workers []Worker
}

// SchedulingOutput lists queued jobs to dispatch, best first, and running
// jobs to preempt (indices into Queued and Running).
type SchedulingOutput struct {
	State    [4]uint64
	Dispatch []uint32
	Preempt  []uint32
}

// BatchingInput asks which jobs run together with Jobs[Lead].
type BatchingInput struct {
	Common
	Lead    uint32
	Models  []ModelInfo
	Jobs    []Job
	Workers []Worker
}

// BatchingOutput is the batch (indices into Jobs, the lead included), or a
// wait: when Wait > 0 the host holds the lead back up to Wait for more
// compatible jobs.
type BatchingOutput struct {
	State [4]uint64
	Batch []uint32
	Wait  time.Duration
}

// BalancingInput asks which worker should run Job.
type BalancingInput struct {
	Common
	Models  []ModelInfo
	Job     Job
	Workers []Worker
}

// BalancingOutput names the worker (index into Workers), or NoWorker.
type BalancingOutput struct {
	State  [4]uint64
	Worker uint32
}

// NoNode marks a routing answer that names no node.
const NoNode = ^uint32(0)

// Node is one node of a cluster as a routing policy sees it: what it holds
// in each tier, how busy it is, how fast it loads, and whether it is
// healthy. A live node publishes it; the simulator fills it from its nodes.
//
//abi:record size=104
type Node struct {
	// Healthy is false for a node that is not taking work (its heartbeat
	// lapsed, it is draining, it lost the cluster). A routing answer must
	// name a healthy node.
	Healthy bool `abi:"72,bit=0" doc:"healthy (a node that is not is never a valid answer)"`
	// Queued and Running count the node's jobs waiting and running;
	// Workers and IdleWorkers its worker processes.
	Queued      uint32 `abi:"56" doc:"queued: jobs waiting on the node"`
	Running     uint32 `abi:"60" doc:"running: jobs running on the node"`
	Workers     uint32 `abi:"64" doc:"workers"`
	IdleWorkers uint32 `abi:"68" doc:"idle_workers"`
	// FreeVRAM is the unreserved VRAM summed over the node's devices;
	// UsableVRAM the largest device's usable memory (a job fits the node
	// when its VRAM is at most this, or when this is 0: unknown).
	FreeVRAM   uint64 `abi:"0" doc:"free_vram: unreserved VRAM summed over the node's devices"`
	UsableVRAM uint64 `abi:"8" doc:"usable_vram: the largest device's usable memory (0 unknown); the job fits when vram ≤ usable_vram"`
	// Wait is the node's estimate of the time until it could start one
	// more job: its backlog (running and queued work) over its workers.
	Wait time.Duration `abi:"16" doc:"wait_ns: the node's estimate of the time until it could start one more job (its backlog over its workers)"`
	// Delay is the network time for a job to reach the node (one hop).
	Delay time.Duration `abi:"24" doc:"delay_ns: network time for the job to reach the node"`
	// H2DBytesPerS, DiskBytesPerS and RemoteBytesPerS are the node's
	// measured load rates: host RAM to device, local disk to RAM, model
	// source to local disk (0: unknown).
	H2DBytesPerS    uint64 `abi:"32" doc:"h2d_bytes_per_s: measured host RAM → device rate (0 unknown)"`
	DiskBytesPerS   uint64 `abi:"40" doc:"disk_bytes_per_s: measured disk → RAM rate (0 unknown)"`
	RemoteBytesPerS uint64 `abi:"48" doc:"remote_bytes_per_s: measured model source → disk rate (0 unknown)"`
	// VRAM, RAM and Disk are the models resident in each tier of the node
	// (indices into Models): VRAM on any of its devices, RAM in its host
	// cache (L2), Disk in its local store (L3). A model in a faster tier
	// is usually in the slower ones too; NodeLoadTime takes the fastest.
	VRAM []uint32 `abi:"76" doc:"VRAM models (on any device)"`
	RAM  []uint32 `abi:"84" doc:"RAM (L2) models"`
	Disk []uint32 `abi:"92" doc:"disk (L3) models"`
}

// RoutingInput asks which node of the cluster should take Job.
type RoutingInput struct {
	Common
	// Random is a uniformly random word the host drew for this decision
	// from its own (injected, seeded in the simulator) source: a policy
	// that chooses at random uses it, so that a run replays.
	Random uint64
	Models []ModelInfo
	Job    Job
	Nodes  []Node
}

// RoutingOutput names the node (index into Nodes), or NoNode.
type RoutingOutput struct {
	State [4]uint64
	Node  uint32
}

// ParamType is a tunable parameter's type.
type ParamType uint32

// The parameter types. Every value travels as a float64.
const (
	ParamFloat ParamType = 0
	ParamInt   ParamType = 1
	ParamBool  ParamType = 2
)

// Param declares one tunable parameter. Its value reaches the policy in
// Common.Params, in declaration order.
type Param struct {
	Name    string // at most 32 bytes, [a-z0-9_.]
	Type    ParamType
	Default float64
	Min     float64
	Max     float64
}

// Evictor is an eviction policy.
type Evictor interface {
	Evict(in *EvictionInput, out *EvictionOutput) Status
}

// Scheduler is a scheduling policy.
type Scheduler interface {
	Schedule(in *SchedulingInput, out *SchedulingOutput) Status
}

// Batcher is a batching policy.
type Batcher interface {
	Batch(in *BatchingInput, out *BatchingOutput) Status
}

// Balancer is a load-balancing policy.
type Balancer interface {
	Balance(in *BalancingInput, out *BalancingOutput) Status
}

// Router is a routing policy: it picks the node of a cluster that takes a
// job (ABI 1.2).
type Router interface {
	Route(in *RoutingInput, out *RoutingOutput) Status
}

// ParamDeclarer is implemented by policies with tunable parameters.
type ParamDeclarer interface {
	Params() []Param
}
