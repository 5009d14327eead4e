package policy

import (
	"errors"
	"fmt"
	"time"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Config is the policies section of kiln's config.
type Config struct {
	// Eviction, Scheduling, Batching and Balancing name the built-in policy
	// each kind starts with; Routing the cluster's (which node takes a
	// job), used only where there is a cluster (kiln sim --nodes, a node
	// with cluster.nats).
	Eviction   string `koanf:"eviction"`
	Scheduling string `koanf:"scheduling"`
	Batching   string `koanf:"batching"`
	Balancing  string `koanf:"balancing"`
	Routing    string `koanf:"routing"`
	// NativeBuiltins serves the built-in policies from their native build
	// instead of their embedded WASM build (same source, same answers).
	NativeBuiltins bool `koanf:"native_builtins"`
	// CallTimeout bounds one decision inside a WASM module.
	CallTimeout time.Duration `koanf:"call_timeout"`
	// MemoryLimitMiB caps each WASM instance's linear memory.
	MemoryLimitMiB int `koanf:"memory_limit_mib"`
	// PoolSize is how many idle instances each module keeps warm.
	PoolSize int `koanf:"pool_size"`
	// MaxFaults within FaultWindow roll a kind back to its previous policy.
	MaxFaults   int           `koanf:"max_faults"`
	FaultWindow time.Duration `koanf:"fault_window"`
	// CacheDir holds wazero's compilation cache; empty keeps it in memory.
	CacheDir string `koanf:"cache_dir"`
	// StateDir keeps loaded modules, the active choices and their history
	// across restarts (see persist.go); empty keeps nothing. The node sets
	// it to <data_dir>/policies; it is not a config key.
	StateDir string `koanf:"-"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Eviction, "lru")
	def(&c.Scheduling, "priority")
	def(&c.Batching, "none")
	def(&c.Balancing, "least-loaded")
	def(&c.Routing, "affinity")
	if c.CallTimeout == 0 {
		c.CallTimeout = 50 * time.Millisecond
	}
	if c.MemoryLimitMiB == 0 {
		c.MemoryLimitMiB = 64
	}
	if c.PoolSize == 0 {
		c.PoolSize = 4
	}
	if c.MaxFaults == 0 {
		c.MaxFaults = 3
	}
	if c.FaultWindow == 0 {
		c.FaultWindow = time.Minute
	}
	return c
}

// Validate checks the section; errors name the full key.
func (c Config) Validate() error {
	var errs []error
	for _, k := range abi.Kinds {
		name := c.builtin(k)
		if name == "" {
			continue
		}
		if _, ok := builtins[k][name]; !ok {
			errs = append(errs, fmt.Errorf("policies.%s: unknown built-in policy %q (have %s)", k, name, builtinNames(k)))
		}
	}
	if c.CallTimeout < 0 || c.CallTimeout > 10*time.Second {
		errs = append(errs, fmt.Errorf("policies.call_timeout: must be between 0 and 10s, got %s", c.CallTimeout))
	}
	if c.MemoryLimitMiB < 0 || c.MemoryLimitMiB > 4096 {
		errs = append(errs, fmt.Errorf("policies.memory_limit_mib: must be between 1 and 4096, got %d", c.MemoryLimitMiB))
	}
	if c.PoolSize < 0 || c.PoolSize > 1024 {
		errs = append(errs, fmt.Errorf("policies.pool_size: must be between 1 and 1024, got %d", c.PoolSize))
	}
	if c.MaxFaults < 0 {
		errs = append(errs, fmt.Errorf("policies.max_faults: must be ≥ 1, got %d", c.MaxFaults))
	}
	if c.FaultWindow < 0 {
		errs = append(errs, fmt.Errorf("policies.fault_window: must be positive, got %s", c.FaultWindow))
	}
	return errors.Join(errs...)
}

func (c Config) builtin(k abi.Kind) string {
	switch k {
	case abi.KindEviction:
		return c.Eviction
	case abi.KindScheduling:
		return c.Scheduling
	case abi.KindBatching:
		return c.Batching
	case abi.KindBalancing:
		return c.Balancing
	case abi.KindRouting:
		return c.Routing
	}
	return ""
}

func (c *Config) setBuiltin(k abi.Kind, name string) {
	switch k {
	case abi.KindEviction:
		c.Eviction = name
	case abi.KindScheduling:
		c.Scheduling = name
	case abi.KindBatching:
		c.Batching = name
	case abi.KindBalancing:
		c.Balancing = name
	case abi.KindRouting:
		c.Routing = name
	}
}
