package config

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// SimConfig is the sim section: what only a simulated node has (`kiln
// sim`; `kiln serve` ignores it). It lives here, and internal/sim has a
// twin of its fields (sim.Section, converted by node.SimSections), because
// the simulator does not import kiln's config: the config composes every
// package's section, and the simulator would link the HTTP API and the
// plugin host through it. A field added here fails to compile the
// conversion until it is added there.
type SimConfig struct {
	// RemoteBytesPerS is the model source's (L4) read bandwidth into the
	// disk tier; 0 means 1.25e9 (a 10 Gbit/s share or object store).
	RemoteBytesPerS float64 `koanf:"remote_bytes_per_s"`
	// NoRAMTier simulates a deployment without a host-memory model cache
	// (a worker-comfyui-style serverless worker): every load reads the
	// disk tier or the source.
	NoRAMTier bool `koanf:"no_ram_tier"`
	// BatchExecution is how a batch of jobs is charged: "sequential" (one
	// job after the other with the models warm, what protocol-v1 workers
	// do live) or "fused" (one run at the cost model's batch efficiency,
	// what a worker that declared it fuses would gain; none does today).
	// Empty means sequential: the simulator charges what the node does.
	BatchExecution string `koanf:"batch_execution"`
	// WholeJobAdmission admits and holds a job by the sum of its models,
	// as kiln did before it ran jobs in stages: the baseline of a node
	// that refuses models larger than a device (docs/stages.md).
	WholeJobAdmission bool `koanf:"whole_job_admission"`
	// NetworkDelay is, in a simulated cluster (kiln sim --nodes N), the
	// time for a job to travel from the node that accepted it to the node
	// the routing policy chose: one hop, added to the job's latency.
	NetworkDelay time.Duration `koanf:"network_delay"`
}

// Validate checks the section.
func (c SimConfig) Validate() error {
	var errs []error
	if c.RemoteBytesPerS < 0 || math.IsInf(c.RemoteBytesPerS, 0) || math.IsNaN(c.RemoteBytesPerS) {
		errs = append(errs, fmt.Errorf("sim.remote_bytes_per_s: must be ≥ 0, got %v", c.RemoteBytesPerS))
	}
	if c.NetworkDelay < 0 || c.NetworkDelay > time.Minute {
		errs = append(errs, fmt.Errorf("sim.network_delay: must be between 0 and 1m, got %s", c.NetworkDelay))
	}
	switch c.BatchExecution {
	case "", "fused", "sequential":
	default:
		errs = append(errs, fmt.Errorf("sim.batch_execution: %q is not fused or sequential", c.BatchExecution))
	}
	return errors.Join(errs...)
}
