package tier

import (
	"fmt"
	"strings"
)

// Config is the tiers section.
type Config struct {
	Disk   DiskConfig   `koanf:"disk"`
	RAM    RAMConfig    `koanf:"ram"`
	Remote RemoteConfig `koanf:"remote"`
	// Convert says which models are rewritten into another weight dtype
	// before they load (convert.go).
	Convert ConvertConfig `koanf:"convert"`
}

// DiskConfig sizes L3.
type DiskConfig struct {
	// Dir holds the content-addressed files; empty means DataDir/cache/blobs.
	Dir string `koanf:"dir"`
	// CapacityBytes bounds L3; 0 means 50 GiB.
	CapacityBytes int64 `koanf:"capacity_bytes"`
	// TargetFill is the fraction of capacity eviction frees down to when it
	// must make room (0 means 0.9): evicting a little more than needed at
	// once keeps evictions off the path of every later promotion.
	TargetFill float64 `koanf:"target_fill"`
}

// RAMConfig sizes L2.
type RAMConfig struct {
	// Dir holds the shared-memory segments; empty means
	// /dev/shm/kiln-<uid>-<hash of the data dir> (the temp dir where there is
	// no /dev/shm). It is emptied at start: L2 does not survive a restart.
	Dir string `koanf:"dir"`
	// CapacityBytes bounds L2; 0 means 8 GiB.
	CapacityBytes int64 `koanf:"capacity_bytes"`
	// TargetFill is as for the disk tier.
	TargetFill float64 `koanf:"target_fill"`
}

// RemoteConfig lists the storage backends (L4) and the loaders that read
// model metadata.
type RemoteConfig struct {
	// Backends are searched in order; the first that has a key wins. `kiln
	// serve --models DIR` adds a kiln-storage-fs backend over DIR when the
	// list is empty.
	Backends []BackendConfig `koanf:"backends"`
	// Loaders map file extensions to loader plugins.
	Loaders []LoaderConfig `koanf:"loaders"`
}

// BackendConfig is one storage plugin.
type BackendConfig struct {
	Name   string `koanf:"name"`
	Plugin string `koanf:"plugin"`
	// Options reach the plugin as KILN_PLUGIN_<UPPER(key)> variables.
	Options map[string]string `koanf:"options"`
}

// LoaderConfig is one loader plugin and the extensions it reads.
type LoaderConfig struct {
	Plugin     string   `koanf:"plugin"`
	Extensions []string `koanf:"extensions"`
}

// DefaultLoaders are used when Remote.Loaders is empty.
var DefaultLoaders = []LoaderConfig{
	{Plugin: "kiln-loader-safetensors", Extensions: []string{".safetensors", ".sft"}},
	{Plugin: "kiln-loader-gguf", Extensions: []string{".gguf"}},
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.Disk.CapacityBytes <= 0 {
		c.Disk.CapacityBytes = 50 << 30
	}
	if c.RAM.CapacityBytes <= 0 {
		c.RAM.CapacityBytes = 8 << 30
	}
	if c.Disk.TargetFill <= 0 {
		c.Disk.TargetFill = 0.9
	}
	if c.RAM.TargetFill <= 0 {
		c.RAM.TargetFill = 0.9
	}
	if len(c.Remote.Loaders) == 0 {
		c.Remote.Loaders = DefaultLoaders
	}
	return c
}

// Validate checks ranges and names.
func (c Config) Validate() error {
	if err := c.Convert.Validate(); err != nil {
		return err
	}
	for name, f := range map[string]float64{"disk": c.Disk.TargetFill, "ram": c.RAM.TargetFill} {
		if f < 0 || f > 1 {
			return fmt.Errorf("tiers.%s.target_fill: %v is not in [0,1]", name, f)
		}
	}
	seen := map[string]bool{}
	for i, b := range c.Remote.Backends {
		if b.Name == "" || b.Plugin == "" {
			return fmt.Errorf("tiers.remote.backends[%d]: name and plugin are required", i)
		}
		if seen[b.Name] {
			return fmt.Errorf("tiers.remote.backends: duplicate name %q", b.Name)
		}
		seen[b.Name] = true
	}
	for i, l := range c.Remote.Loaders {
		if l.Plugin == "" || len(l.Extensions) == 0 {
			return fmt.Errorf("tiers.remote.loaders[%d]: plugin and extensions are required", i)
		}
		for _, e := range l.Extensions {
			if !strings.HasPrefix(e, ".") {
				return fmt.Errorf("tiers.remote.loaders[%d]: extension %q must start with a dot", i, e)
			}
		}
	}
	return nil
}
