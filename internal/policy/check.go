package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// CheckOptions configure Check.
type CheckOptions struct {
	// Seed draws the random inputs: the load's LoadSamples and the trace.
	// The same seed gives the same inputs, so a failure replays.
	Seed uint64
	// Samples is the length of the trace run after the load (default
	// 1,000).
	Samples int
	// CallTimeout and MemoryLimitMiB are the host's limits (defaults as
	// in Config).
	CallTimeout    time.Duration
	MemoryLimitMiB int
	// CacheDir is wazero's compilation cache (empty: in memory).
	CacheDir string
}

// CheckReport is what Check found.
type CheckReport struct {
	Kind   string      `json:"kind"`
	SHA256 string      `json:"sha256"`
	Params []abi.Param `json:"params,omitempty"`
	// Trace counts the trace's decisions by outcome.
	Trace TraceResult `json:"trace"`
}

// Check runs a module through what kiln does before it serves one — the
// load's checks (ABI marker, exports, imports, reserved names), the fixed
// self-test and LoadSamples random inputs drawn from opts.Seed — and then a
// trace of opts.Samples more, each encoded, called, decoded and validated
// exactly as a live decision is. It needs no kiln: this is `kiln policy
// test`, for an author to run before shipping a module.
func Check(ctx context.Context, k abi.Kind, wasm []byte, opts CheckOptions, log zerolog.Logger) (CheckReport, error) {
	if opts.Samples <= 0 {
		opts.Samples = 1000
	}
	h, err := newHost(Config{NativeBuiltins: true, CallTimeout: opts.CallTimeout, MemoryLimitMiB: opts.MemoryLimitMiB,
		CacheDir: opts.CacheDir, PoolSize: 1}, log, clock.Real(), nil)
	if err != nil {
		return CheckReport{}, err
	}
	defer h.Close()
	h.sampleSeed = func() uint64 { return opts.Seed }
	v, err := h.prepare(ctx, k, "test", SourceWASM, wasm)
	if err != nil {
		return CheckReport{}, fmt.Errorf("load as %s policy: %w", k, err)
	}
	defer v.close()
	v.setNumber(1)
	rep := CheckReport{Kind: k.String(), SHA256: v.sha, Params: v.params}
	// The trace starts with the load's samples (the same seed), so that
	// one seed replays both.
	// The trace keeps the live timeout: a module too slow for it would
	// fault on a node.
	rep.Trace, err = h.runTrace(ctx, v, opts.Seed, opts.Samples, 0)
	if err != nil {
		return rep, fmt.Errorf("trace: %w", err)
	}
	return rep, nil
}
