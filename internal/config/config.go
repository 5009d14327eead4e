package config

import (
	"github.com/kiln-gpu/kiln/internal/api/apiconfig"
	"github.com/kiln-gpu/kiln/internal/cluster/clusterconfig"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/plugin"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/tier"
	"github.com/kiln-gpu/kiln/internal/tune/autotune"
	"github.com/kiln-gpu/kiln/internal/worker"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Config is kiln's whole effective configuration. Each component owns the
// struct of its own section; this type only assembles them.
type Config struct {
	// Listen is the HTTP address; loopback unless an operator says otherwise.
	Listen string `koanf:"listen"`
	// DataDir holds the queue database and outputs.
	DataDir string `koanf:"data_dir"`
	// ModelsDir is the local model store (ComfyUI folder layout:
	// checkpoints/, loras/, vae/, ...).
	ModelsDir string `koanf:"models_dir"`
	// OutputDir is where workers write outputs; empty means DataDir/output.
	OutputDir string `koanf:"output_dir"`

	Log     logging.Config        `koanf:"log"`
	API     apiconfig.Config      `koanf:"api"`
	Queue   job.Config            `koanf:"queue"`
	Devices device.Config         `koanf:"devices"`
	Workers worker.Config         `koanf:"workers"`
	Cost    cost.Config           `koanf:"cost"`
	Limits  workflow.Limits       `koanf:"limits"`
	ComfyUI apiconfig.ComfyConfig `koanf:"comfyui"`
	Tiers   tier.Config           `koanf:"tiers"`
	Plugins plugin.Config         `koanf:"plugins"`

	// The policy host (internal/policy) and the admin token that guards the
	// mutating API routes (internal/api).
	Admin    apiconfig.AdminConfig `koanf:"admin"`
	Policies policy.Config         `koanf:"policies"`

	Dispatch dispatch.Config `koanf:"dispatch"`
	// Experiments are the defaults of policy experiments (internal/experiment).
	Experiments experiment.Config `koanf:"experiments"`
	// Tune is the background tuner (internal/tune, tune.auto); off by
	// default.
	Tune autotune.Config `koanf:"tune"`
	// Sim is read by `kiln sim` only.
	Sim SimConfig `koanf:"sim"`
	// Cluster joins the node to a kiln cluster on NATS JetStream
	// (internal/cluster); empty cluster.nats, the default, is a single node.
	Cluster clusterconfig.Config `koanf:"cluster"`
}
