package main

import (
	"context"
	"os"
	"strconv"
	"strings"

	"github.com/kiln-gpu/kiln/sdk/plugin"
	"github.com/kiln-gpu/kiln/sdk/safetensors"
)

type loader struct{}

var _ plugin.Loader = loader{}

// Inspect parses the header from req.Head, or from req.Path when Head is
// empty.
func (loader) Inspect(_ context.Context, req plugin.InspectRequest) (plugin.ModelInfo, error) {
	head, size := req.Head, req.Size
	if len(head) == 0 && req.Path != "" {
		b, sz, err := readHead(req.Path)
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		head, size = b, sz
	}
	return parse(req.Key, head, size)
}

// readHead reads the header bytes of the file at path and returns them with
// the file's size.
func readHead(path string) ([]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	head, err := safetensors.ReadHead(f, st.Size())
	if err != nil {
		return nil, 0, err
	}
	return head, st.Size(), nil
}

// parse reads a safetensors header (sdk/safetensors checks it) from head,
// the first bytes of a file of the given size (0 when unknown). A head too
// short for the header answers NeedBytes instead. Tensors come back with
// offsets from the start of the file.
func parse(key string, head []byte, size int64) (plugin.ModelInfo, error) {
	if len(head) < 8 {
		return plugin.ModelInfo{NeedBytes: 8}, nil
	}
	n, err := safetensors.HeadSize(head, size)
	if err != nil {
		return plugin.ModelInfo{}, err
	}
	if int64(len(head)) < n {
		return plugin.ModelInfo{NeedBytes: n}, nil
	}
	h, err := safetensors.Parse(head, size)
	if err != nil {
		return plugin.ModelInfo{}, err
	}
	mi := plugin.ModelInfo{Format: "safetensors", TotalBytes: size, Component: plugin.ComponentOf(key), Metadata: h.Metadata}
	for _, t := range h.Tensors {
		mi.Tensors = append(mi.Tensors, plugin.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape,
			Begin: h.DataOffset + t.Begin, End: h.DataOffset + t.End})
	}
	if mi.TotalBytes == 0 {
		mi.TotalBytes = h.DataOffset + h.DataBytes()
	}
	mi.NominalBytes = mi.TotalBytes
	if v, err := strconv.ParseInt(mi.Metadata["kiln.nominal_bytes"], 10, 64); err == nil && v > 0 {
		mi.NominalBytes = v
	}
	mi.Family = mi.Metadata["kiln.family"]
	if mi.Family == "" {
		mi.Family = familyOf(key, mi.Tensors)
	}
	// Weights plus ~10% for the allocator and activations kept per model;
	// the kernel's cost model refines it per family.
	mi.VRAMBytes = mi.NominalBytes + mi.NominalBytes/10
	if plugin.DependsOnBase(mi.Component) {
		mi.DependsOn = []string{"checkpoint"}
	}
	return mi, nil
}

// familyOf guesses the model family from tensor names, then from the name.
func familyOf(key string, ts []plugin.Tensor) string {
	for _, t := range ts {
		switch {
		case strings.HasPrefix(t.Name, "double_blocks."):
			return "flux"
		case strings.HasPrefix(t.Name, "conditioner.embedders.1"):
			return "sdxl"
		case strings.HasPrefix(t.Name, "joint_blocks."):
			return "sd3"
		}
	}
	n := strings.ToLower(key)
	switch {
	case strings.Contains(n, "flux"):
		return "flux"
	case strings.Contains(n, "sd3"):
		return "sd3"
	case strings.Contains(n, "xl"):
		return "sdxl"
	}
	return ""
}
