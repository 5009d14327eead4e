package policy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
)

// instrumentVersion names the output of instrument: a module instrumented
// by an older kiln is never taken from the cache for this one. Bump it with
// any change to what instrument writes (TestInstrumentVersionPinned fails
// until then).
const instrumentVersion = 1

// instrumented returns instrument(wasm), whose SHA-256 is sum, from the
// compilation cache dir when an earlier load left it there. The pass costs
// ~13 ms of a swap for a 2.2 MB Go module that wazero's cache has compiled
// before (BENCHMARKS.md), and every start pays it for each built-in.
//
// A cached file holds the SHA-256 of its module and then the module, so
// that a torn or damaged file is recomputed rather than compiled; the
// directory is trusted as much as wazero's compiled code beside it.
func (h *Host) instrumented(sum [32]byte, wasm []byte) ([]byte, error) {
	if h.cfg.CacheDir == "" {
		return instrument(wasm)
	}
	path := filepath.Join(h.cfg.CacheDir, "kiln-instrumented", fmt.Sprintf("v%d-%x.wasm", instrumentVersion, sum))
	if b, err := os.ReadFile(path); err == nil && len(b) > sha256.Size {
		if got := sha256.Sum256(b[sha256.Size:]); bytes.Equal(got[:], b[:sha256.Size]) {
			return b[sha256.Size:], nil
		}
	}
	code, err := instrument(wasm)
	if err != nil {
		return nil, err
	}
	// Best effort: a cache that cannot be written costs the next load the
	// pass again, nothing more.
	check := sha256.Sum256(code)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		if err := writeFileAtomic(path, append(check[:], code...)); err != nil {
			h.log.Debug().Err(err).Str("path", path).Msg("could not cache an instrumented policy module")
		}
	}
	return code, nil
}
