package policy

import (
	"sync"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
)

// nativeHost serves Native; built on first use, kept for the process.
var nativeHost = sync.OnceValue(func() *Host {
	cfg := Config{NativeBuiltins: true}
	for k, name := range fallbackNames {
		cfg.setBuiltin(k, name)
	}
	h, err := NewHost(cfg, zerolog.Nop(), clock.Real())
	if err != nil {
		// The fallback names are built-ins of this binary; a failure here
		// is a broken build, not an input the process could recover from.
		panic("policy: the native fallback host: " + err.Error())
	}
	return h
})

// Native returns the host that decides where a caller was given no
// policy: the native builds of the fallback built-ins (fallbackNames:
// priority, least-loaded, none, lru, and least-loaded for routing) — the
// same policies/* sources whose WASM builds are the default and whose
// native builds answer for a faulting module — behind the same adapters,
// answer checks and stall checks as a loaded module. internal/dispatch and
// the experiment router take their defaults from it (the tiers take theirs
// from the node), so the kernel holds no hand-written copy of a policy (one
// source, two targets).
//
// One host serves the process. Its scheduler, balancer, batcher and
// router keep no state of their own (ABI §7); each cache that evicts
// through it takes its own Evictor (Host.NewEvictor), whose state words
// and entry tags are the cache's. Its clock is the real one: a caller that
// replays time (the simulator) passes its own host instead.
func Native() *Host { return nativeHost() }
