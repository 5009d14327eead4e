// Package policy is the SDK for kiln policies: the types of the four
// decisions kiln delegates (eviction, scheduling, batching, load
// balancing), the binary ABI that carries them into a WebAssembly module
// (ABI.md), and the glue that turns a Go type into such a module.
//
// A policy is a Go type implementing one or more of Evictor, Scheduler,
// Batcher and Balancer. The same source builds natively — for unit tests,
// for kiln's simulator and as its fallback — and as a WASI reactor:
//
//	// policies/eviction/biggest/biggest.go
//	type Biggest struct{}
//	func (Biggest) Evict(in *policy.EvictionInput, out *policy.EvictionOutput) policy.Status { ... }
//
//	// policies/eviction/biggest/wasm/main.go
//	func init() { policy.Serve(biggest.Biggest{}) }
//	func main() {}
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o biggest.wasm ./policies/eviction/biggest/wasm
//	kiln policy load biggest.wasm --kind eviction --activate
//
// Policies keep no state between calls of their own: the host pools
// instances, so state goes into the answer's State words and the eviction
// entries' tags, which come back in the next input. Tunable parameters are
// declared with ParamDeclarer and arrive in Common.Params.
//
// The records' wire layouts are the struct tags of their types
// (types.go); their encoders and decoders (records_gen.go), ABI.md's
// tables and the AssemblyScript SDK's accessors are generated from them by
// internal/abigen (go generate ./internal/abigen), and testdata/golden
// holds the bytes every encoder must keep writing.
//
// This package never imports the kernel; internal/policy hosts the modules.
package policy
