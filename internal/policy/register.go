package policy

import (
	"fmt"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// RegisterNative adds a native policy that hosts then serve as they serve
// a built-in's native build (with Config.NativeBuiltins, or when a name has
// no WASM build): tests and the simulator's experiment benchmarks plant
// policies this way, such as a deliberately bad one whose effect they
// know. new must return a value implementing kind k's interface of
// sdk/policy.
//
// Call it before any Host is made (from init or TestMain): the table is
// read without a lock. A name that is already registered panics, as
// duplicate registrations do everywhere in kiln.
func RegisterNative(k abi.Kind, name string, new func() any) {
	if builtins[k] == nil {
		panic(fmt.Sprintf("policy: register %s: unknown kind", name))
	}
	if _, dup := builtins[k][name]; dup {
		panic(fmt.Sprintf("policy: register %s policy %s: already registered", k, name))
	}
	builtins[k][name] = new
}
