package policy

import (
	"embed"
	"io/fs"
	"slices"
	"strings"

	"github.com/kiln-gpu/kiln/policies/balancing/affinity"
	leastloaded "github.com/kiln-gpu/kiln/policies/balancing/least-loaded"
	roundrobin "github.com/kiln-gpu/kiln/policies/balancing/round-robin"
	"github.com/kiln-gpu/kiln/policies/batching/none"
	samemodel "github.com/kiln-gpu/kiln/policies/batching/same-model"
	"github.com/kiln-gpu/kiln/policies/eviction/demand"
	"github.com/kiln-gpu/kiln/policies/eviction/gdsf"
	"github.com/kiln-gpu/kiln/policies/eviction/lru"
	"github.com/kiln-gpu/kiln/policies/eviction/s3fifo"
	routingaffinity "github.com/kiln-gpu/kiln/policies/routing/affinity"
	routingleastloaded "github.com/kiln-gpu/kiln/policies/routing/least-loaded"
	"github.com/kiln-gpu/kiln/policies/routing/random"
	"github.com/kiln-gpu/kiln/policies/scheduling/edf"
	"github.com/kiln-gpu/kiln/policies/scheduling/fifo"
	"github.com/kiln-gpu/kiln/policies/scheduling/priority"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// builtinDir holds the built-in policies' WASM builds, <kind>.<name>.wasm,
// written there by `make policies`. It always holds its README, so the
// pattern matches in a fresh clone where nothing was built; a built-in
// without its module is served by its native build.
//
//go:embed builtin
var builtinDir embed.FS

// BuiltinFS is the embedded directory of built-in modules.
func BuiltinFS() fs.FS { sub, _ := fs.Sub(builtinDir, "builtin"); return sub }

// builtins are the native builds of the built-in policies, by kind and name.
var builtins = map[abi.Kind]map[string]func() any{
	abi.KindEviction: {
		"lru":    func() any { return lru.New() },
		"gdsf":   func() any { return gdsf.New() },
		"s3fifo": func() any { return s3fifo.New() },
		"demand": func() any { return demand.New() },
	},
	abi.KindScheduling: {
		"fifo":     func() any { return fifo.New() },
		"priority": func() any { return priority.New() },
		"edf":      func() any { return edf.New() },
	},
	abi.KindBatching: {
		"none":       func() any { return none.New() },
		"same-model": func() any { return samemodel.New() },
	},
	abi.KindBalancing: {
		"round-robin":  func() any { return roundrobin.New() },
		"least-loaded": func() any { return leastloaded.New() },
		"affinity":     func() any { return affinity.New() },
	},
	abi.KindRouting: {
		"random":       func() any { return random.New() },
		"least-loaded": func() any { return routingleastloaded.New() },
		"affinity":     func() any { return routingaffinity.New() },
	},
}

// Builtin returns a new native instance of a built-in policy, or nil.
func Builtin(k abi.Kind, name string) any {
	if f := builtins[k][name]; f != nil {
		return f()
	}
	return nil
}

// BuiltinNames lists the built-in policies of a kind, sorted.
func BuiltinNames(k abi.Kind) []string {
	var out []string
	for n := range builtins[k] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func builtinNames(k abi.Kind) string { return strings.Join(BuiltinNames(k), ", ") }

// BuiltinFile is the file name of a built-in's WASM build.
func BuiltinFile(k abi.Kind, name string) string { return k.String() + "." + name + ".wasm" }
