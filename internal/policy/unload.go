package policy

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// ErrInUse is wrapped by errors about a version that cannot be unloaded
// because it serves: the active version of its kind, or one an experiment
// runs.
var ErrInUse = errors.New("policy version in use")

// InUseFunc reports why kind k's version ref ("name@number") must stay
// loaded, or "" when nothing outside the host needs it.
type InUseFunc func(k abi.Kind, ref string) string

// SetInUse installs the check Unload asks before it drops a version: the
// experiment controller's arms are versions the host does not count as
// active. Call it once, before the host serves unloads.
func (h *Host) SetInUse(f InUseFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inUse = f
}

// Unload drops name@number of kind k and returns its memory: its instances
// and, unless another loaded version runs the same bytes, its compiled
// module and the module file kept in the state dir. The active version is
// refused, as is one that the InUseFunc says an experiment runs; a version
// on the rollback stack is taken off it (the change log says so). A
// built-in can be unloaded and is loaded again when next activated.
//
// Decisions in flight on the version finish: their instance is closed when
// it would go back to the pool, and wazero lets a compiled module be
// closed while instances of it run.
func (h *Host) Unload(k abi.Kind, name string, number int, reason string) (VersionInfo, error) {
	s, ok := h.slots[k]
	if !ok {
		return VersionInfo{}, fmt.Errorf("unload: unknown kind %d", k)
	}
	if number < 1 {
		return VersionInfo{}, fmt.Errorf("unload %s policy %s: name a version (%s@N); list shows them", k, name, name)
	}
	h.mu.Lock()
	v := find(s, name, number)
	if v == nil {
		h.mu.Unlock()
		return VersionInfo{}, fmt.Errorf("unload %s policy %s@%d: %w", k, name, number, ErrNotFound)
	}
	if s.active.Load() == v {
		h.mu.Unlock()
		return VersionInfo{}, fmt.Errorf("unload %s policy %s: it is the active version; activate another first: %w", k, v.ref(), ErrInUse)
	}
	if h.inUse != nil {
		if why := h.inUse(k, v.ref()); why != "" {
			h.mu.Unlock()
			return VersionInfo{}, fmt.Errorf("unload %s policy %s: %s uses it: %w", k, v.ref(), why, ErrInUse)
		}
	}
	vi := v.info(false)
	s.versions = slices.DeleteFunc(s.versions, func(o *version) bool { return o == v })
	onStack := slices.Contains(s.previous, v)
	s.previous = slices.DeleteFunc(s.previous, func(o *version) bool { return o == v })
	note := reason
	if onStack {
		note = joinReason(reason, "taken off the rollback stack")
	}
	s.changes = append(s.changes, Change{Time: h.clk.Now(), Kind: k.String(), From: v.ref(), To: s.active.Load().ref(), Action: "unload", Reason: note})
	if len(s.changes) > maxChanges {
		s.changes = slices.Delete(s.changes, 0, len(s.changes)-maxChanges)
	}
	shared := h.sharedLocked(v)
	h.persistLocked()
	h.mu.Unlock()

	v.close()
	if v.mod != nil && !shared {
		h.dropCompiled(v)
	}
	if v.mod != nil {
		// Hand the memory back to the system now. The version's instance
		// memories and decoded module are garbage once closed, but a node
		// that allocates little may not collect for minutes, and the Go
		// runtime returns freed pages to the OS only slowly: 16 loads and
		// unloads of a Go module left kiln's RSS at 856 MiB (from 229)
		// until this (issue 21). Unloads are rare operator actions, and
		// this costs one collection.
		debug.FreeOSMemory()
	}
	h.log.Info().Str("kind", k.String()).Str("policy", v.ref()).Str("reason", reason).Bool("bytes_shared", shared).Msg("policy unloaded")
	return vi, nil
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// sharedLocked reports whether another loaded version, of any kind, runs
// v's bytes; h.mu is held.
func (h *Host) sharedLocked(v *version) bool {
	if v.mod == nil {
		return false
	}
	for _, s := range h.slots {
		for _, o := range s.versions {
			if o != v && o.mod != nil && o.sha == v.sha {
				return true
			}
		}
	}
	return false
}

// dropCompiled forgets and closes v's compiled module and removes its
// module file; nothing else runs those bytes.
func (h *Host) dropCompiled(v *version) {
	if b, err := hex.DecodeString(v.sha); err == nil && len(b) == 32 {
		sum := [32]byte(b)
		h.compiledMu.Lock()
		if h.compiled[sum] == v.mod.compiled {
			delete(h.compiled, sum)
		}
		h.compiledMu.Unlock()
	}
	if err := v.mod.compiled.Close(context.Background()); err != nil {
		h.log.Warn().Err(err).Str("policy", v.ref()).Msg("closing an unloaded policy's compiled module")
	}
	if h.cfg.StateDir != "" && v.source == SourceWASM {
		if err := os.Remove(h.modulePath(v.sha)); err != nil && !errors.Is(err, os.ErrNotExist) {
			h.log.Warn().Err(err).Str("policy", v.ref()).Msg("removing an unloaded policy's module file")
		}
	}
}
