package node

import (
	"github.com/kiln-gpu/kiln/internal/config"
	"github.com/kiln-gpu/kiln/internal/sim"
)

// SimConfig describes the node a config file defines to the simulator.
// The mapping lives here, not in internal/sim, so that the simulator is an
// alternative assembly of the decision core, the cost model and the tiers'
// logic, and does not link kiln's config (which composes every package's
// section, the HTTP API and the plugin host among them).
func SimConfig(c *config.Config) sim.Config {
	return sim.FromSections(SimSections(c))
}

// SimSections are the sections of c the simulator reads.
func SimSections(c *config.Config) sim.Sections {
	return sim.Sections{
		Devices:          c.Devices,
		WorkersPerDevice: c.Workers.PerDevice,
		Cost:             c.Cost,
		Policies:         c.Policies,
		Tiers:            c.Tiers,
		Dispatch:         c.Dispatch,
		Sim:              sim.Section(c.Sim),
	}
}

// SimBaseline returns a loader of the simulator's baselines from dir
// (configs/<name>.yaml over the embedded default, with sets over it, as
// `--set` does), the built-in policies served natively (the same source as
// their WASM build; policy's TestWASMAndNativeAgree checks they answer
// alike) so that a suite does not compile WASM for every run. It is
// sim.BenchOptions.Baseline for `kiln sim bench` and the tests.
func SimBaseline(dir string) func(name string, sets ...string) (sim.Config, error) {
	return func(name string, sets ...string) (sim.Config, error) {
		c, err := config.Load(config.LoadOptions{File: dir + "/" + name + ".yaml",
			Sets: append([]string{"policies.native_builtins=true"}, sets...)})
		if err != nil {
			return sim.Config{}, err
		}
		return SimConfig(c), nil
	}
}
