package sim

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/tier"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// DefaultRemoteBytesPerS is the bandwidth from the model source (L4) when
// the config does not say: a 10 Gbit/s network share or object store.
const DefaultRemoteBytesPerS = 1.25e9

// DefaultQueueView is how many queued jobs of each class the scheduler is
// shown per decision, as the live dispatcher does (decision.QueueWindow).
const DefaultQueueView = decision.QueueWindow

// Config is the simulated node: its hardware, cost model and policies. It
// is a value; Run does not change it. FromSections builds one from kiln's
// config sections (node.SimConfig from a loaded config) so that `kiln sim`
// honours the same keys as `kiln serve`.
type Config struct {
	// Devices are the simulated GPUs (devices.simulated).
	Devices []device.SimDeviceConfig
	// Headroom is the fraction of each device never reserved (devices.headroom).
	Headroom float64
	// WorkersPerDevice is workers.per_device.
	WorkersPerDevice int
	// Cost is the cost model (cost.*), the same one kiln-worker-sim charges.
	Cost cost.Config
	// Policies selects the built-in policy of each kind (policies.*).
	Policies policy.Config
	// RAMBytes and DiskBytes bound the L2 and L3 tiers
	// (tiers.ram.capacity_bytes, tiers.disk.capacity_bytes).
	RAMBytes  int64
	DiskBytes int64
	// RemoteBytesPerS is the read bandwidth of the model source (L4) into
	// L3; 0 means DefaultRemoteBytesPerS. Disk (L3 → RAM) reads at
	// Cost.DiskBytesPerS and RAM → device at the device's host→device
	// bandwidth, both through the cost model.
	RemoteBytesPerS float64
	// QueueView bounds the queued jobs of each class shown to the
	// scheduler (the window, merged in arrival order); 0 means
	// DefaultQueueView.
	QueueView int
	// RAMTargetFill and DiskTargetFill are the fill levels eviction frees
	// the host tiers down to (tiers.*.target_fill); 0 means 0.9.
	RAMTargetFill, DiskTargetFill float64
	// TierEvictor picks the host tiers' victims; nil means the active
	// eviction policy (policy.Host.NewEvictor, one per tier), as a node's
	// tiers use.
	TierEvictor decision.Evictor
	// NoRAMTier drops the L2 RAM tier (sim.no_ram_tier): every load reads
	// disk or the source, as a serverless worker without a host cache.
	NoRAMTier bool
	// LookaheadJobs is dispatch.lookahead_jobs: how many queued jobs have
	// their models pulled up to RAM while they wait (0: off).
	LookaheadJobs int
	// Predict warms models no queued job needs yet into the RAM tier, from
	// what the jobs seen so far predict (internal/predict; warm.go).
	Predict PredictConfig
	// BatchExecution is BatchSequential (default: what every worker does
	// today) or BatchFused (sim.batch_execution).
	BatchExecution string
	// Preemption is dispatch.preemption: a scheduling policy that plans
	// preemptions may stop a running job of a lower class for a waiting
	// one when no worker is idle (dispatch.Core.Preempt), as live.
	Preemption bool
	// PreemptMinRun is dispatch.preempt_min_run; 0 means
	// dispatch.DefaultPreemptMinRun, as a dispatcher built without one.
	PreemptMinRun time.Duration
	// Params sets tunable parameters of the active policies before the
	// run, by kind and parameter name ({"batching": {"max_size": 8}}), as
	// PUT /v1/policies/{kind}/params does live; the auto-tuner
	// (internal/tune) searches over them. A parameter the policy does not
	// declare, or a value outside its bounds, fails the run.
	Params map[string]map[string]float64
	// WholeJobAdmission is sim.whole_job_admission: each job is planned as
	// one stage of all its models (the node before stages), not in stages.
	WholeJobAdmission bool
	// WorkerContextBytes is dispatch.worker_context_bytes: each worker's
	// context, held on its device's ledger as live.
	WorkerContextBytes uint64
}

// How a batch is charged (Config.BatchExecution).
const (
	// BatchFused runs a batch as one sampler run at the summed batch size:
	// the cost model's batch efficiency (cost.Config.BatchFactor). It
	// models workers that declare they fuse batches; no worker does over
	// protocol v1, so it answers "what would fusing gain", not "what does
	// the node do".
	BatchFused = "fused"
	// BatchSequential runs a batch's jobs one after the other with the
	// models warm, as the live dispatcher does over worker protocol v1
	// (internal/dispatch/RATIONALE.md, "Batches run back to back"). It is
	// the default.
	BatchSequential = "sequential"
)

// Sections are the sections of kiln's config (internal/config) that
// describe a node to the simulator. The simulator does not import
// internal/config, which composes every package's section and so would link
// the HTTP API and the plugin host into it; its callers (internal/node,
// cmd/kiln, through node.SimConfig) fill Sections from the config they
// loaded.
type Sections struct {
	Devices          device.Config
	WorkersPerDevice int
	Cost             cost.Config
	Policies         policy.Config
	Tiers            tier.Config
	Dispatch         dispatch.Config
	Sim              Section
}

// Section is the config's sim section (config.SimConfig, converted): what
// only a simulated node has. Its fields are documented there.
type Section struct {
	RemoteBytesPerS   float64
	NoRAMTier         bool
	BatchExecution    string
	WholeJobAdmission bool
	NetworkDelay      time.Duration
}

// FromSections takes the simulated node from kiln's config sections.
func FromSections(c Sections) Config {
	return Config{
		Devices:          append([]device.SimDeviceConfig(nil), c.Devices.Simulated...),
		Headroom:         c.Devices.Headroom,
		WorkersPerDevice: c.WorkersPerDevice,
		Cost:             c.Cost,
		Policies:         c.Policies,
		RAMBytes:         c.Tiers.RAM.CapacityBytes,
		DiskBytes:        c.Tiers.Disk.CapacityBytes,
		RAMTargetFill:    c.Tiers.RAM.TargetFill,
		DiskTargetFill:   c.Tiers.Disk.TargetFill,
		RemoteBytesPerS:  c.Sim.RemoteBytesPerS,
		NoRAMTier:        c.Sim.NoRAMTier,
		LookaheadJobs:    c.Dispatch.LookaheadJobs,
		BatchExecution:   c.Sim.BatchExecution,
		Preemption:       c.Dispatch.Preemption,
		PreemptMinRun:    c.Dispatch.PreemptMinRun,

		WholeJobAdmission:  c.Sim.WholeJobAdmission,
		WorkerContextBytes: uint64(max(c.Dispatch.WorkerContextBytes, 0)),
		// As the live node (internal/node predict.go): it warms while fewer
		// jobs than the lookahead's window wait.
		Predict: PredictConfig{Enabled: c.Dispatch.Predict, MaxQueued: max(c.Dispatch.LookaheadJobs, 1)},
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	c.Cost = c.Cost.WithDefaults()
	c.Policies = c.Policies.WithDefaults()
	if c.WorkersPerDevice == 0 {
		c.WorkersPerDevice = 1
	}
	if c.RemoteBytesPerS == 0 {
		c.RemoteBytesPerS = DefaultRemoteBytesPerS
	}
	if c.QueueView == 0 {
		c.QueueView = DefaultQueueView
	}
	if c.RAMBytes == 0 {
		c.RAMBytes = 8 << 30
	}
	if c.DiskBytes == 0 {
		c.DiskBytes = 50 << 30
	}
	if c.NoRAMTier {
		c.RAMBytes = 0
	}
	if c.BatchExecution == "" {
		c.BatchExecution = BatchSequential
	}
	if c.PreemptMinRun <= 0 {
		c.PreemptMinRun = dispatch.DefaultPreemptMinRun
	}
	return c
}

// Validate checks the config after defaults.
func (c Config) Validate() error {
	var errs []error
	if len(c.Devices) == 0 {
		errs = append(errs, errors.New("sim: no simulated devices (devices.simulated)"))
	}
	for i, d := range c.Devices {
		if d.MemoryBytes == 0 {
			errs = append(errs, fmt.Errorf("sim: devices.simulated[%d].memory_bytes: must be > 0", i))
		}
	}
	if c.WorkersPerDevice < 1 {
		errs = append(errs, fmt.Errorf("sim: workers.per_device: %d is < 1", c.WorkersPerDevice))
	}
	if c.BatchExecution != BatchFused && c.BatchExecution != BatchSequential {
		errs = append(errs, fmt.Errorf("sim: batch execution %q is not fused or sequential", c.BatchExecution))
	}
	if c.LookaheadJobs < 0 {
		errs = append(errs, fmt.Errorf("sim: lookahead jobs %d is < 0", c.LookaheadJobs))
	}
	if c.RAMBytes < 0 || c.DiskBytes < 0 {
		errs = append(errs, errors.New("sim: tier capacities must be >= 0"))
	}
	if !(c.RemoteBytesPerS > 0) || math.IsInf(c.RemoteBytesPerS, 0) {
		errs = append(errs, errors.New("sim: remote bandwidth must be > 0"))
	}
	if err := c.Cost.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Options are the run's collaborators, injected so that the package never
// reads the wall clock itself.
type Options struct {
	// Wall measures the run's wall time, only to compute sim_speedup; nil
	// means clock.Real(). Tests pass a clock.Fake for byte-identical reports.
	Wall clock.Clock
	// Log receives the policy host's logs; the zero logger discards them.
	Log zerolog.Logger
	// Seed is recorded in the report. The run itself draws no random
	// numbers (every tie is broken by order); the generators use the seed.
	Seed int64
	// OnStart, when set, is called for every job start in dispatch order
	// with the job's index in the trace and the worker's id (batch
	// followers when their turn comes): the sequence the live dispatcher's
	// EventStarted events give, for comparing the two.
	OnStart func(request int, worker string)
	// OnEvict, when set, is called for every eviction from a host tier
	// ("ram", "disk") in order, with the model evicted: the sequence the
	// live tiers' evictions give, for comparing the two.
	OnEvict func(tier, model string)
	// Canary, when set, runs a canary with the live experiment controller
	// in virtual time (canary.go) and adds its outcome to the report.
	Canary *Canary
	// Watch, when set, makes a change by hand mid-run and has the live
	// watcher judge it (watch.go); its outcome is in the report.
	Watch *Watch
	// Modules are policy modules to load and activate before the run,
	// after the built-ins the config names: `kiln policy test --trace`
	// replays a recorded trace with a module an author is writing.
	Modules []Module
}

// Module is a WASM policy module for Options.Modules.
type Module struct {
	Kind abi.Kind
	Name string
	WASM []byte
}
