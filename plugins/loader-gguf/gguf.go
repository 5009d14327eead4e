package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

// Limits that keep a hostile header from making the parser allocate much.
const (
	maxString  = 1 << 20
	maxArray   = 1 << 24
	maxTensors = 1 << 20
	maxKVs     = 1 << 20
	maxDims    = 8
	// initialHead is what the loader asks for first when Head is short.
	initialHead = 1 << 20
)

var errFormat = errors.New("not a valid gguf file")

// errShort means the head ended before the header did.
var errShort = errors.New("header truncated")

// ggmlTypes gives block size (elements) and bytes per block for each GGML
// tensor type (ggml.h).
var ggmlTypes = map[uint32]struct {
	name  string
	block int64
	bytes int64
}{
	0: {"F32", 1, 4}, 1: {"F16", 1, 2}, 2: {"Q4_0", 32, 18}, 3: {"Q4_1", 32, 20},
	6: {"Q5_0", 32, 22}, 7: {"Q5_1", 32, 24}, 8: {"Q8_0", 32, 34}, 9: {"Q8_1", 32, 36},
	10: {"Q2_K", 256, 84}, 11: {"Q3_K", 256, 110}, 12: {"Q4_K", 256, 144}, 13: {"Q5_K", 256, 176},
	14: {"Q6_K", 256, 210}, 15: {"Q8_K", 256, 292}, 24: {"I8", 1, 1}, 25: {"I16", 1, 2},
	26: {"I32", 1, 4}, 27: {"I64", 1, 8}, 28: {"F64", 1, 8}, 30: {"BF16", 1, 2},
}

type loader struct{}

var _ plugin.Loader = loader{}

// Inspect parses the header from req.Head, or from req.Path when Head is empty.
func (loader) Inspect(_ context.Context, req plugin.InspectRequest) (plugin.ModelInfo, error) {
	head, size := req.Head, req.Size
	if len(head) == 0 && req.Path != "" {
		f, err := os.Open(req.Path)
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		size = st.Size()
		head = make([]byte, min(size, 64<<20))
		if _, err := io.ReadFull(f, head); err != nil {
			return plugin.ModelInfo{}, err
		}
	}
	return parse(req.Key, head, size)
}

type reader struct {
	b   []byte
	off int
}

func (r *reader) take(n int) ([]byte, error) {
	if n < 0 || len(r.b)-r.off < n {
		return nil, errShort
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s, nil
}

func (r *reader) u32() (uint32, error) {
	b, err := r.take(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64() (uint64, error) {
	b, err := r.take(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *reader) str() (string, error) {
	n, err := r.u64()
	if err != nil {
		return "", err
	}
	if n > maxString {
		return "", fmt.Errorf("%w: string of %d bytes", errFormat, n)
	}
	b, err := r.take(int(n))
	return string(b), err
}

// value reads one metadata value of type t and returns it as a string for
// scalars (arrays give their length).
func (r *reader) value(t uint32, depth int) (string, error) {
	fixed := map[uint32]int{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
	if n, ok := fixed[t]; ok {
		b, err := r.take(n)
		if err != nil {
			return "", err
		}
		switch t {
		case 0:
			return strconv.Itoa(int(b[0])), nil
		case 1:
			return strconv.Itoa(int(int8(b[0]))), nil
		case 2:
			return strconv.Itoa(int(binary.LittleEndian.Uint16(b))), nil
		case 3:
			return strconv.Itoa(int(int16(binary.LittleEndian.Uint16(b)))), nil
		case 4:
			return strconv.FormatUint(uint64(binary.LittleEndian.Uint32(b)), 10), nil
		case 5:
			return strconv.Itoa(int(int32(binary.LittleEndian.Uint32(b)))), nil
		case 6:
			return strconv.FormatFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), 'g', -1, 32), nil
		case 7:
			return strconv.FormatBool(b[0] != 0), nil
		case 10:
			return strconv.FormatUint(binary.LittleEndian.Uint64(b), 10), nil
		case 11:
			return strconv.FormatInt(int64(binary.LittleEndian.Uint64(b)), 10), nil
		default:
			return strconv.FormatFloat(math.Float64frombits(binary.LittleEndian.Uint64(b)), 'g', -1, 64), nil
		}
	}
	switch t {
	case 8:
		return r.str()
	case 9:
		if depth > 2 {
			return "", fmt.Errorf("%w: arrays nested too deep", errFormat)
		}
		et, err := r.u32()
		if err != nil {
			return "", err
		}
		n, err := r.u64()
		if err != nil {
			return "", err
		}
		if n > maxArray {
			return "", fmt.Errorf("%w: array of %d", errFormat, n)
		}
		for range n {
			if _, err := r.value(et, depth+1); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("[%d]", n), nil
	}
	return "", fmt.Errorf("%w: unknown value type %d", errFormat, t)
}

// parse reads a GGUF header: magic "GGUF", version (2 or 3), tensor count,
// metadata count, the metadata key-values and the tensor infos; tensor data
// starts at the next multiple of general.alignment (default 32).
func parse(key string, head []byte, size int64) (plugin.ModelInfo, error) {
	mi, err := parseFull(key, head, size)
	if errors.Is(err, errShort) {
		if size > 0 && int64(len(head)) >= size {
			return plugin.ModelInfo{}, fmt.Errorf("%w: file ends inside the header", errFormat)
		}
		need := max(int64(initialHead), 2*int64(len(head)))
		if size > 0 {
			need = min(need, size)
		}
		return plugin.ModelInfo{NeedBytes: need}, nil
	}
	return mi, err
}

func parseFull(key string, head []byte, size int64) (plugin.ModelInfo, error) {
	r := &reader{b: head}
	magic, err := r.take(4)
	if err != nil {
		return plugin.ModelInfo{}, err
	}
	if string(magic) != "GGUF" {
		return plugin.ModelInfo{}, fmt.Errorf("%w: bad magic %q", errFormat, magic)
	}
	version, err := r.u32()
	if err != nil {
		return plugin.ModelInfo{}, err
	}
	if version != 2 && version != 3 {
		return plugin.ModelInfo{}, fmt.Errorf("%w: unsupported version %d", errFormat, version)
	}
	nt, err := r.u64()
	if err != nil {
		return plugin.ModelInfo{}, err
	}
	nkv, err := r.u64()
	if err != nil {
		return plugin.ModelInfo{}, err
	}
	if nt > maxTensors || nkv > maxKVs {
		return plugin.ModelInfo{}, fmt.Errorf("%w: %d tensors, %d metadata entries", errFormat, nt, nkv)
	}
	mi := plugin.ModelInfo{Format: "gguf", TotalBytes: size, Component: plugin.ComponentOf(key),
		Metadata: map[string]string{"gguf.version": strconv.Itoa(int(version))}}
	for range nkv {
		k, err := r.str()
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		t, err := r.u32()
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		v, err := r.value(t, 0)
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		mi.Metadata[k] = v
	}
	align := int64(32)
	if a, err := strconv.ParseInt(mi.Metadata["general.alignment"], 10, 64); err == nil {
		if a <= 0 || a&(a-1) != 0 || a > 1<<20 {
			return plugin.ModelInfo{}, fmt.Errorf("%w: alignment %d", errFormat, a)
		}
		align = a
	}
	type info struct {
		t      plugin.Tensor
		offset uint64
		bytes  int64
	}
	infos := make([]info, 0, min(nt, 1024))
	for range nt {
		name, err := r.str()
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		nd, err := r.u32()
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		if nd == 0 || nd > maxDims {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q has %d dimensions", errFormat, name, nd)
		}
		shape := make([]int64, nd)
		elems := int64(1)
		for i := range shape {
			d, err := r.u64()
			if err != nil {
				return plugin.ModelInfo{}, err
			}
			if d > 1<<40 || (d > 0 && elems > (1<<50)/int64(d)) {
				return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q shape overflows", errFormat, name)
			}
			shape[i] = int64(d)
			elems *= int64(d)
		}
		gt, err := r.u32()
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		ty, ok := ggmlTypes[gt]
		if !ok {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q has unknown type %d", errFormat, name, gt)
		}
		if elems%ty.block != 0 {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q: %d elements not a multiple of %s blocks", errFormat, name, elems, ty.name)
		}
		off, err := r.u64()
		if err != nil {
			return plugin.ModelInfo{}, err
		}
		if off > 1<<50 {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q offset %d", errFormat, name, off)
		}
		infos = append(infos, info{t: plugin.Tensor{Name: name, DType: ty.name, Shape: shape}, offset: off, bytes: elems / ty.block * ty.bytes})
	}
	dataStart := (int64(r.off) + align - 1) / align * align
	var total int64
	for _, in := range infos {
		in.t.Begin = dataStart + int64(in.offset)
		in.t.End = in.t.Begin + in.bytes
		if size > 0 && in.t.End > size {
			return plugin.ModelInfo{}, fmt.Errorf("%w: tensor %q ends at %d past the file (%d)", errFormat, in.t.Name, in.t.End, size)
		}
		total += in.bytes
		mi.Tensors = append(mi.Tensors, in.t)
	}
	if mi.TotalBytes == 0 {
		mi.TotalBytes = dataStart + total
	}
	mi.NominalBytes = mi.TotalBytes
	mi.Family = mi.Metadata["general.architecture"]
	if mi.Component == "model" {
		mi.Component = "llm"
	}
	// Weights plus the KV cache and scratch llama.cpp allocates; 20% is the
	// usual rule of thumb for a 4k context.
	mi.VRAMBytes = total + total/5
	return mi, nil
}
