package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// The host keeps what an operator changed in Config.StateDir, so that a
// restart serves the same policies:
//
//	<state_dir>/modules/<sha256>.wasm   every module loaded through Load, named by its checksum
//	<state_dir>/state.json              versions, active choice, rollback stack, parameters and
//	                                    history of each kind, with the checksum of its body
//
// state.json is replaced atomically (write, fsync, rename) after every
// change. At start the host restores it in the background, as it upgrades
// the built-ins: each module is checked against its name and self-tested
// again before it can serve; one that fails is skipped and the change log
// says why.
const stateVersion = 1

type savedState struct {
	Version int                   `json:"version"`
	Kinds   map[string]*savedKind `json:"kinds"`
}

type savedKind struct {
	Active   string         `json:"active"`
	Previous []string       `json:"previous,omitempty"`
	Versions []savedVersion `json:"versions"`
	Changes  []Change       `json:"changes,omitempty"`
}

type savedVersion struct {
	Name   string             `json:"name"`
	Number int                `json:"number"`
	Source string             `json:"source"`
	SHA256 string             `json:"sha256,omitempty"`
	Params map[string]float64 `json:"params,omitempty"`
}

// stateFile is what state.json holds: the body and its SHA-256, so that a
// torn or edited file is refused instead of half-applied.
type stateFile struct {
	SHA256 string          `json:"sha256"`
	State  json.RawMessage `json:"state"`
}

func (h *Host) modulePath(sum string) string {
	return filepath.Join(h.cfg.StateDir, "modules", sum+".wasm")
}

// saveModule keeps a loaded module's bytes; a no-op without a state dir.
func (h *Host) saveModule(sum string, wasm []byte) error {
	if h.cfg.StateDir == "" {
		return nil
	}
	p := h.modulePath(sum)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(p, wasm)
}

// persistLocked writes state.json; h.mu is held. A failure is logged, not
// returned: the change it records has happened and serves.
func (h *Host) persistLocked() {
	if h.cfg.StateDir == "" || h.restoring {
		return
	}
	st := savedState{Version: stateVersion, Kinds: map[string]*savedKind{}}
	for _, k := range abi.Kinds {
		s := h.slots[k]
		sk := &savedKind{Active: s.active.Load().ref(), Changes: s.changes}
		for _, p := range s.previous {
			sk.Previous = append(sk.Previous, p.ref())
		}
		for _, v := range s.versions {
			sv := savedVersion{Name: v.name, Number: v.number, Source: v.source}
			if v.source == SourceWASM {
				sv.SHA256 = v.sha
			}
			if vals := *v.values.Load(); len(v.params) > 0 {
				sv.Params = map[string]float64{}
				for i, p := range v.params {
					sv.Params[p.Name] = vals[i]
				}
			}
			sk.Versions = append(sk.Versions, sv)
		}
		st.Kinds[k.String()] = sk
	}
	body, err := json.Marshal(st)
	if err == nil {
		sum := sha256.Sum256(body)
		var data []byte
		// Not indented: indenting would rewrite the body the sum is of.
		data, err = json.Marshal(stateFile{SHA256: hex.EncodeToString(sum[:]), State: body})
		if err == nil {
			err = os.MkdirAll(h.cfg.StateDir, 0o755)
		}
		if err == nil {
			err = writeFileAtomic(filepath.Join(h.cfg.StateDir, "state.json"), data)
		}
	}
	if err != nil {
		h.log.Error().Err(err).Str("dir", h.cfg.StateDir).Msg("could not save the policy state; a restart would lose the latest change")
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// readState reads and checks state.json; nil without one.
func (h *Host) readState() (*savedState, error) {
	data, err := os.ReadFile(filepath.Join(h.cfg.StateDir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("state.json: %w", err)
	}
	sum := sha256.Sum256(f.State)
	if hex.EncodeToString(sum[:]) != f.SHA256 {
		return nil, errors.New("state.json: checksum mismatch; the file is torn or was edited")
	}
	var st savedState
	if err := json.Unmarshal(f.State, &st); err != nil {
		return nil, fmt.Errorf("state.json: %w", err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("state.json: version %d, this kiln reads %d", st.Version, stateVersion)
	}
	return &st, nil
}

// restore brings back the saved versions, rollback stacks, parameters,
// history and active choices. It runs once, at start, in the background.
func (h *Host) restore() {
	defer func() {
		h.mu.Lock()
		h.restoring = false
		h.persistLocked()
		h.mu.Unlock()
	}()
	st, err := h.readState()
	if err != nil {
		// The file is kept as it is until the next change replaces it.
		h.log.Error().Err(err).Msg("policy state not restored; serving the configured built-ins")
		return
	}
	if st == nil {
		return
	}
	for _, k := range abi.Kinds {
		if sk := st.Kinds[k.String()]; sk != nil {
			h.restoreKind(k, sk)
		}
	}
}

func (h *Host) restoreKind(k abi.Kind, sk *savedKind) {
	ctx := h.ctx
	byRef := map[string]*version{}
	var order []string // the saved order, which List keeps: maps have none
	var problems []string
	for _, sv := range sk.Versions {
		if h.ctx.Err() != nil {
			return
		}
		var v *version
		var err error
		switch sv.Source {
		case SourceWASM:
			v, err = h.restoreModule(ctx, k, sv)
		default:
			// A built-in: its code is in this binary. Only the one the
			// kind is active on or may roll back to needs loading now.
			ref := fmt.Sprintf("%s@%d", sv.Name, sv.Number)
			if ref != sk.Active && !slices.Contains(sk.Previous, ref) {
				continue
			}
			var a *Arm
			if a, err = h.Arm(ctx, k, sv.Name, sv.Number); err == nil {
				v = a.v
			}
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s@%d: %v", sv.Name, sv.Number, err))
			h.log.Error().Err(err).Str("policy", fmt.Sprintf("%s.%s@%d", k, sv.Name, sv.Number)).Msg("saved policy not restored")
			continue
		}
		v.setParams(sv.Params)
		byRef[v.ref()] = v
		order = append(order, v.ref())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.slots[k]
	// One row per name@number. A built-in restored here may already be
	// in the slot under another *version: the configured one, or its WASM
	// build that upgradeBuiltin swapped in while this restore ran (the
	// duplicate rows `policy list` showed after a restart). The one
	// already registered stays, with the saved parameters, unless it is a
	// native build and the restored one runs as WASM.
	for _, ref := range order {
		v := byRef[ref]
		i := slices.IndexFunc(s.versions, func(o *version) bool { return o.ref() == ref })
		switch {
		case i < 0:
			s.versions = append(s.versions, v)
		case s.versions[i] == v:
		case s.versions[i].source == SourceNative && v.source != SourceNative:
			old := s.versions[i]
			s.versions[i] = v
			if s.active.Load() == old {
				s.active.Store(v)
			}
		default:
			kept := s.versions[i]
			kept.setParams(paramsOf(v))
			if v.mod != nil && v.mod != kept.mod {
				v.close()
			}
			byRef[ref] = kept
		}
	}
	start := s.changes
	s.changes = append(slices.Clone(sk.Changes), start...)
	if len(s.changes) > maxChanges {
		s.changes = slices.Delete(s.changes, 0, len(s.changes)-maxChanges)
	}
	s.previous = s.previous[:0]
	for _, ref := range sk.Previous {
		if v := byRef[ref]; v != nil {
			s.previous = append(s.previous, v)
		}
	}
	reason := "restored from the saved state"
	if len(problems) > 0 {
		reason += "; not restored: " + fmt.Sprint(problems)
	}
	if v := byRef[sk.Active]; v != nil {
		prev := s.previous
		h.swap(s, v, "restore", reason)
		s.previous = prev // a restore is no step an operator could roll back
	} else {
		s.changes = append(s.changes, Change{Time: h.clk.Now(), Kind: k.String(), From: s.active.Load().ref(), To: s.active.Load().ref(),
			Action: "restore", Reason: fmt.Sprintf("saved active policy %s not restored; %s", sk.Active, reason)})
	}
}

// restoreModule reads a saved module, checks it against its checksum and
// prepares it (compile, self-test) under its saved number.
func (h *Host) restoreModule(ctx context.Context, k abi.Kind, sv savedVersion) (*version, error) {
	if err := checkName(sv.Name); err != nil {
		return nil, err
	}
	wasm, err := os.ReadFile(h.modulePath(sv.SHA256))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(wasm); hex.EncodeToString(sum[:]) != sv.SHA256 {
		return nil, fmt.Errorf("module file does not match its checksum %s", sv.SHA256)
	}
	v, err := h.prepare(ctx, k, sv.Name, SourceWASM, wasm)
	if err != nil {
		return nil, err
	}
	v.setNumber(sv.Number)
	return v, nil
}

// paramsOf returns v's parameter values by name.
func paramsOf(v *version) map[string]float64 {
	vals := *v.values.Load()
	out := make(map[string]float64, len(v.params))
	for i, p := range v.params {
		out[p.Name] = vals[i]
	}
	return out
}

// setParams sets saved parameter values that the version still declares,
// within its bounds.
func (v *version) setParams(saved map[string]float64) {
	if len(saved) == 0 {
		return
	}
	vals := slices.Clone(*v.values.Load())
	for i, p := range v.params {
		if x, ok := saved[p.Name]; ok && x >= p.Min && x <= p.Max {
			vals[i] = x
		}
	}
	v.values.Store(&vals)
}
