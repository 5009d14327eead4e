package modelfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Written reports what SynthStore did for one model.
type Written struct {
	// Ref is the model.
	Ref workflow.ModelRef
	// Path is the file's path under the store directory.
	Path string
	// Bytes is the file's size.
	Bytes int64
	// NominalBytes is the size of the real model the file stands for.
	NominalBytes int64
	// Skipped is true when the file was already there and was left alone.
	Skipped bool
	// Reason says why a file was skipped.
	Reason string
}

// SynthStore writes a synthetic file for each model under dir, in ComfyUI's
// folder layout (dir/checkpoints/..., dir/loras/...), creating directories
// as needed. A file already present is left alone when it is a synthetic
// file of the same family, nominal size and scale, or when it is not a
// synthetic file at all (a real model is never overwritten); a synthetic
// file made with other parameters is rewritten.
func SynthStore(dir string, refs []workflow.ModelRef, scale float64, seed uint64) ([]Written, error) {
	var out []Written
	for _, ref := range refs {
		folder, name, err := workflow.SplitModelID(ref.ID)
		if err != nil {
			return out, fmt.Errorf("synth store: %w", err)
		}
		path := filepath.Join(dir, folder, filepath.FromSlash(name))
		family := ref.Family
		if family == "" {
			family = workflow.GuessFamily(folder, name)
		}
		spec := Spec{ID: ref.ID, Family: family, NominalBytes: NominalSize(family, name), Scale: scale, Seed: seed}
		w := Written{Ref: ref, Path: path, NominalBytes: spec.NominalBytes}
		if reason, size, ok := keep(path, spec); ok {
			w.Skipped, w.Reason, w.Bytes = true, reason, size
			out = append(out, w)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return out, fmt.Errorf("synth store: %w", err)
		}
		if err := SynthFile(path, spec); err != nil {
			return out, fmt.Errorf("synth store: %w", err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return out, fmt.Errorf("synth store: %w", err)
		}
		w.Bytes = fi.Size()
		out = append(out, w)
	}
	return out, nil
}

// keep reports whether an existing file at path should be left alone.
func keep(path string, spec Spec) (reason string, size int64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return "", 0, false
	}
	h, err := ReadHeader(f, fi.Size())
	if err != nil {
		// A damaged synthetic file is rewritten; anything else (a real
		// .ckpt or .pth) is left alone.
		head := make([]byte, 64<<10)
		k, _ := f.ReadAt(head, 0)
		if fi.Size() == 0 || bytes.Contains(head[:k], []byte(`"`+MetaSynth+`":"1"`)) {
			return "", 0, false
		}
		return "present, not a safetensors file", fi.Size(), true
	}
	if !h.Synthetic() {
		return "present, a real model file", fi.Size(), true
	}
	if h.Family() == spec.Family && h.NominalBytes() == spec.NominalBytes &&
		h.Metadata[MetaScale] == strconv.FormatFloat(spec.Scale, 'g', -1, 64) &&
		h.Metadata["kiln.seed"] == strconv.FormatUint(spec.Seed, 10) {
		return "present, same synthetic file", fi.Size(), true
	}
	return "", 0, false
}
