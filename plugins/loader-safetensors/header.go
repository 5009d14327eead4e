package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

// maxHeader bounds the JSON header (the reference implementation's limit).
const maxHeader = 100 << 20

var errFormat = errors.New("not a valid safetensors file")

var dtypeSize = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

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
	var n [8]byte
	if _, err := f.ReadAt(n[:], 0); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errFormat, err)
	}
	hl := binary.LittleEndian.Uint64(n[:])
	if hl > maxHeader || int64(hl)+8 > st.Size() {
		return nil, 0, fmt.Errorf("%w: header length %d", errFormat, hl)
	}
	buf := make([]byte, 8+hl)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, 0, err
	}
	return buf, st.Size(), nil
}

type rawTensor struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// parse reads a safetensors header: 8-byte little-endian length N, N bytes
// of JSON mapping tensor names to dtype, shape and data_offsets (relative to
// the data section at 8+N), plus an optional "__metadata__" string map.
func parse(key string, head []byte, size int64) (plugin.ModelInfo, error) {
	if len(head) < 8 {
		return plugin.ModelInfo{NeedBytes: 8}, nil
	}
	hl := binary.LittleEndian.Uint64(head[:8])
	if hl < 2 || hl > maxHeader {
		return plugin.ModelInfo{}, fmt.Errorf("%w: header length %d", errFormat, hl)
	}
	if size > 0 && int64(hl)+8 > size {
		return plugin.ModelInfo{}, fmt.Errorf("%w: header length %d exceeds file size %d", errFormat, hl, size)
	}
	if uint64(len(head)) < 8+hl {
		return plugin.ModelInfo{NeedBytes: int64(8 + hl)}, nil
	}
	dataStart := int64(8 + hl)
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(head[8 : 8+hl]))
	if err := dec.Decode(&raw); err != nil {
		return plugin.ModelInfo{}, fmt.Errorf("%w: header json: %v", errFormat, err)
	}
	mi := plugin.ModelInfo{Format: "safetensors", TotalBytes: size, Component: plugin.ComponentOf(key), Metadata: map[string]string{}}
	var end int64
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &mi.Metadata); err != nil {
				return plugin.ModelInfo{}, fmt.Errorf("%w: __metadata__: %v", errFormat, err)
			}
			continue
		}
		var rt rawTensor
		if err := json.Unmarshal(msg, &rt); err != nil {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q: %v", errFormat, name, err)
		}
		es, ok := dtypeSize[rt.DType]
		if !ok {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q: unknown dtype %q", errFormat, name, rt.DType)
		}
		if len(rt.DataOffsets) != 2 || rt.DataOffsets[0] < 0 || rt.DataOffsets[1] < rt.DataOffsets[0] {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q: bad data_offsets %v", errFormat, name, rt.DataOffsets)
		}
		n := uint64(1)
		for _, d := range rt.Shape {
			if d < 0 {
				return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q: negative dimension", errFormat, name)
			}
			hi, lo := bits.Mul64(n, uint64(d))
			if hi != 0 || lo > 1<<62 {
				return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q: shape overflows", errFormat, name)
			}
			n = lo
		}
		if hi, lo := bits.Mul64(n, uint64(es)); hi != 0 || lo != uint64(rt.DataOffsets[1]-rt.DataOffsets[0]) {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q: %d bytes for shape %v of %s", errFormat, name,
				rt.DataOffsets[1]-rt.DataOffsets[0], rt.Shape, rt.DType)
		}
		if size > 0 && dataStart+rt.DataOffsets[1] > size {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q ends past the file", errFormat, name)
		}
		end = max(end, rt.DataOffsets[1])
		mi.Tensors = append(mi.Tensors, plugin.Tensor{Name: name, DType: rt.DType, Shape: rt.Shape,
			Begin: dataStart + rt.DataOffsets[0], End: dataStart + rt.DataOffsets[1]})
	}
	sort.Slice(mi.Tensors, func(i, j int) bool {
		if mi.Tensors[i].Begin != mi.Tensors[j].Begin {
			return mi.Tensors[i].Begin < mi.Tensors[j].Begin
		}
		return mi.Tensors[i].Name < mi.Tensors[j].Name
	})
	for i := 1; i < len(mi.Tensors); i++ {
		if mi.Tensors[i].Begin < mi.Tensors[i-1].End {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensors %q and %q overlap", errFormat, mi.Tensors[i-1].Name, mi.Tensors[i].Name)
		}
	}
	if mi.TotalBytes == 0 {
		mi.TotalBytes = dataStart + end
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
