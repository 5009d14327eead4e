package sim

import "github.com/kiln-gpu/kiln/internal/config"

// The simulator's own code does not read kiln's config (node.SimConfig
// maps it); its tests load the repository's baselines through these two,
// which do what node.SimSections and node.SimBaseline do — node imports
// this package, so its tests cannot import node.

func fromKernelConfig(c *config.Config) Config {
	return FromSections(Sections{Devices: c.Devices, WorkersPerDevice: c.Workers.PerDevice, Cost: c.Cost,
		Policies: c.Policies, Tiers: c.Tiers, Dispatch: c.Dispatch, Sim: Section(c.Sim)})
}

// LoadBaseline reads configs/<name>.yaml from dir over the embedded
// default, with the built-ins served natively and sets applied over it.
func LoadBaseline(dir, name string, sets ...string) (Config, error) {
	c, err := config.Load(config.LoadOptions{File: dir + "/" + name + ".yaml",
		Sets: append([]string{"policies.native_builtins=true"}, sets...)})
	if err != nil {
		return Config{}, err
	}
	return fromKernelConfig(c), nil
}

func testBaselines(dir string) func(string, ...string) (Config, error) {
	return func(name string, sets ...string) (Config, error) { return LoadBaseline(dir, name, sets...) }
}
