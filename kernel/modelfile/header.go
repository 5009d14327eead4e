package modelfile

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sort"
	"strconv"
)

// MaxHeaderBytes bounds the JSON header; real files stay far below it.
const MaxHeaderBytes = 100 << 20

// Metadata keys kiln writes into synthetic files.
const (
	MetaSynth   = "kiln.synth"
	MetaFamily  = "kiln.family"
	MetaNominal = "kiln.nominal_bytes"
	MetaScale   = "kiln.scale"
	MetaID      = "kiln.id"
)

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("not a valid safetensors file")

// dtypeSizes are the element sizes of safetensors dtypes, in bytes.
var dtypeSizes = map[string]uint64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// DTypeSize returns the size of one element of dtype, or 0 if unknown.
func DTypeSize(dtype string) int64 { return int64(dtypeSizes[dtype]) }

// Tensor is one entry of the tensor table. Begin and End are offsets from
// the start of the data section (Header.DataOffset).
type Tensor struct {
	Name  string
	DType string
	Shape []int64
	Begin int64
	End   int64
}

// Bytes returns the tensor's data size.
func (t Tensor) Bytes() int64 { return t.End - t.Begin }

// Header is a parsed safetensors header.
type Header struct {
	// Metadata is the "__metadata__" map, empty if the file has none.
	Metadata map[string]string
	// Tensors are ordered by Begin, that is in file order.
	Tensors []Tensor
	// DataOffset is where tensor data starts: 8 + the header length.
	DataOffset int64
	// TotalBytes is the file size: DataOffset plus all tensor data.
	TotalBytes int64
}

// NominalBytes returns the size of the model the file stands for: the
// kiln.nominal_bytes metadata of a synthetic file, else the file's own size.
func (h *Header) NominalBytes() int64 {
	if s, ok := h.Metadata[MetaNominal]; ok {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return h.TotalBytes
}

// Family returns the kiln.family metadata, empty when absent.
func (h *Header) Family() string { return h.Metadata[MetaFamily] }

// Synthetic reports whether Synth wrote the file.
func (h *Header) Synthetic() bool { return h.Metadata[MetaSynth] == "1" }

type rawTensor struct {
	DType       string   `json:"dtype"`
	Shape       []uint64 `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// ReadHeader reads and checks the header of a safetensors file of the given
// size: the header length is bounded, the JSON well formed with no duplicate
// names, every dtype known, every tensor's byte range as long as its shape
// and dtype say, and the ranges contiguous from 0 to the end of the file
// with no overlap.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	if size < 8 {
		return nil, fmt.Errorf("read header: file of %d bytes: %w", size, ErrFormat)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n < 2 || n > MaxHeaderBytes || n > uint64(size-8) {
		return nil, fmt.Errorf("read header: header length %d (file %d bytes, limit %d): %w", n, size, MaxHeaderBytes, ErrFormat)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	h, err := parseHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("read header: %w: %w", err, ErrFormat)
	}
	h.DataOffset = 8 + int64(n)
	var end int64
	for _, t := range h.Tensors {
		if t.Begin != end {
			if t.Begin < end {
				return nil, fmt.Errorf("read header: tensor %q overlaps the one before: %w", t.Name, ErrFormat)
			}
			return nil, fmt.Errorf("read header: gap before tensor %q: %w", t.Name, ErrFormat)
		}
		end = t.End
	}
	if end != size-h.DataOffset {
		return nil, fmt.Errorf("read header: tensor data ends at %d, file has %d data bytes: %w",
			end, size-h.DataOffset, ErrFormat)
	}
	h.TotalBytes = size
	return h, nil
}

func parseHeader(buf []byte) (*Header, error) {
	if buf[0] != '{' {
		return nil, fmt.Errorf("header does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	h := &Header{Metadata: map[string]string{}}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("bad key %v", tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("duplicate key %q", name)
		}
		seen[name] = true
		if name == "__metadata__" {
			if err := dec.Decode(&h.Metadata); err != nil {
				return nil, fmt.Errorf("metadata: %w", err)
			}
			if h.Metadata == nil {
				h.Metadata = map[string]string{}
			}
			continue
		}
		var rt rawTensor
		if err := dec.Decode(&rt); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		t, err := checkTensor(name, rt)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, t)
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	// Anything after the object must be padding.
	if rest := bytes.TrimLeft(buf[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, fmt.Errorf("trailing bytes after header json")
	}
	sort.SliceStable(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	return h, nil
}

func checkTensor(name string, rt rawTensor) (Tensor, error) {
	es, ok := dtypeSizes[rt.DType]
	if !ok {
		return Tensor{}, fmt.Errorf("tensor %q: unknown dtype %q", name, rt.DType)
	}
	if len(rt.DataOffsets) != 2 {
		return Tensor{}, fmt.Errorf("tensor %q: data_offsets must have two elements", name)
	}
	begin, end := rt.DataOffsets[0], rt.DataOffsets[1]
	if begin > end || end > 1<<62 {
		return Tensor{}, fmt.Errorf("tensor %q: bad data_offsets [%d, %d]", name, begin, end)
	}
	want := es
	shape := make([]int64, len(rt.Shape))
	for i, d := range rt.Shape {
		if d > 1<<62 {
			return Tensor{}, fmt.Errorf("tensor %q: dimension %d too large", name, d)
		}
		hi, lo := bits.Mul64(want, d)
		if hi != 0 || lo > 1<<62 {
			return Tensor{}, fmt.Errorf("tensor %q: shape too large", name)
		}
		want = lo
		shape[i] = int64(d)
	}
	if want != end-begin {
		return Tensor{}, fmt.Errorf("tensor %q: %s%v needs %d bytes, data_offsets give %d",
			name, rt.DType, rt.Shape, want, end-begin)
	}
	return Tensor{Name: name, DType: rt.DType, Shape: shape, Begin: int64(begin), End: int64(end)}, nil
}
