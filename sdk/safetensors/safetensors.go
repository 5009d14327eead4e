package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
)

// MaxHeaderBytes bounds the JSON header, as the reference implementation
// does; real files stay far below it.
const MaxHeaderBytes = 100 << 20

// maxOffset bounds data offsets and byte lengths, so that adding the data
// offset (at most 8+MaxHeaderBytes) or summing two of them cannot overflow
// an int64.
const maxOffset = 1 << 62

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("not a valid safetensors file")

// dtypeSizes are the element sizes of safetensors dtypes, in bytes.
var dtypeSizes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// DTypeSize returns the size of one element of dtype in bytes, or 0 if the
// dtype is unknown.
func DTypeSize(dtype string) int64 { return dtypeSizes[dtype] }

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
	// Tensors are ordered by Begin, then End, then Name: file order, with
	// ties between empty tensors broken the same way every time.
	Tensors []Tensor
	// DataOffset is where tensor data starts: 8 + the header length.
	DataOffset int64
}

// DataBytes returns the length of the data section the tensors use: where
// the last one ends.
func (h *Header) DataBytes() int64 {
	if len(h.Tensors) == 0 {
		return 0
	}
	// Sorted and without overlap, so the last tensor ends last.
	return h.Tensors[len(h.Tensors)-1].End
}

// HeadSize returns how many bytes at the start of a file hold its header:
// 8 plus the header length read from the first 8 bytes of head. size is the
// file's size, or 0 when unknown; a header that would not fit in it is an
// error.
func HeadSize(head []byte, size int64) (int64, error) {
	if len(head) < 8 {
		return 0, fmt.Errorf("header length: %d bytes, need 8: %w", len(head), io.ErrUnexpectedEOF)
	}
	n := binary.LittleEndian.Uint64(head)
	// "{}" is the shortest header.
	if n < 2 || n > MaxHeaderBytes {
		return 0, fmt.Errorf("header length %d (limit %d): %w", n, MaxHeaderBytes, ErrFormat)
	}
	if size > 0 && 8+int64(n) > size {
		return 0, fmt.Errorf("header length %d exceeds the file's %d bytes: %w", n, size, ErrFormat)
	}
	return 8 + int64(n), nil
}

// ReadHead reads the header bytes of a file of the given size: the 8-byte
// length and the JSON, as Parse takes them.
func ReadHead(r io.ReaderAt, size int64) ([]byte, error) {
	if size < 8 {
		return nil, fmt.Errorf("file of %d bytes: %w", size, ErrFormat)
	}
	var length [8]byte
	if _, err := r.ReadAt(length[:], 0); err != nil {
		return nil, fmt.Errorf("read header length: %w", err)
	}
	n, err := HeadSize(length[:], size)
	if err != nil {
		return nil, err
	}
	head := make([]byte, n)
	if _, err := r.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	return head, nil
}

// Read reads and parses the header of a file of the given size.
func Read(r io.ReaderAt, size int64) (*Header, error) {
	head, err := ReadHead(r, size)
	if err != nil {
		return nil, err
	}
	return Parse(head, size)
}

// Parse parses the header at the start of head, which must hold at least
// HeadSize bytes (more are ignored). size is the file's size, or 0 when
// unknown; when known, no tensor may end past it.
func Parse(head []byte, size int64) (*Header, error) {
	n, err := HeadSize(head, size)
	if err != nil {
		return nil, err
	}
	if int64(len(head)) < n {
		return nil, fmt.Errorf("header of %d bytes, have %d: %w", n, len(head), io.ErrUnexpectedEOF)
	}
	h, err := parseJSON(head[8:n])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrFormat)
	}
	h.DataOffset = n
	slices.SortFunc(h.Tensors, func(a, b Tensor) int {
		return cmp.Or(cmp.Compare(a.Begin, b.Begin), cmp.Compare(a.End, b.End), cmp.Compare(a.Name, b.Name))
	})
	for i := 1; i < len(h.Tensors); i++ {
		if prev, t := h.Tensors[i-1], h.Tensors[i]; t.Begin < prev.End {
			return nil, fmt.Errorf("tensors %q and %q overlap: %w", prev.Name, t.Name, ErrFormat)
		}
	}
	if end := h.DataOffset + h.DataBytes(); size > 0 && end > size {
		return nil, fmt.Errorf("tensor data ends at byte %d of a %d-byte file: %w", end, size, ErrFormat)
	}
	return h, nil
}

// CheckContiguous returns an error unless the tensors fill the data section
// of a file of the given size exactly: the first begins where the data
// starts, each next one where the one before ends, and the last at the end
// of the file. Parse accepts such gaps; readers that size or copy a file by
// its tensors refuse them.
func (h *Header) CheckContiguous(size int64) error {
	var end int64
	for _, t := range h.Tensors {
		if t.Begin != end {
			return fmt.Errorf("tensor %q begins at %d, not where the data before it ends (%d): %w", t.Name, t.Begin, end, ErrFormat)
		}
		end = t.End
	}
	if data := size - h.DataOffset; end != data {
		return fmt.Errorf("tensor data ends at %d, file has %d data bytes: %w", end, data, ErrFormat)
	}
	return nil
}

// rawTensor is a tensor as the JSON spells it. Unsigned numbers make the
// decoder refuse negative dimensions and offsets.
type rawTensor struct {
	DType       string   `json:"dtype"`
	Shape       []uint64 `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// parseJSON parses the header's JSON object token by token rather than into
// a map, so that a duplicate name is seen (a map would keep the last one
// silently).
func parseJSON(buf []byte) (*Header, error) {
	if buf[0] != '{' {
		return nil, errors.New("header is not a JSON object")
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
			return nil, fmt.Errorf("duplicate name %q", name)
		}
		seen[name] = true
		if name == "__metadata__" {
			if err := dec.Decode(&h.Metadata); err != nil {
				return nil, fmt.Errorf("__metadata__: %w", err)
			}
			if h.Metadata == nil { // "__metadata__": null
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
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		h.Tensors = append(h.Tensors, t)
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	// Writers may pad the header with spaces to align the data section;
	// anything else after the object is not a header.
	if rest := bytes.TrimLeft(buf[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, errors.New("bytes after the header's JSON object")
	}
	return h, nil
}

// checkTensor checks a tensor's dtype and that its byte range is as long as
// its shape and dtype say, with every product checked for overflow.
func checkTensor(name string, rt rawTensor) (Tensor, error) {
	size, ok := dtypeSizes[rt.DType]
	if !ok {
		return Tensor{}, fmt.Errorf("unknown dtype %q", rt.DType)
	}
	if len(rt.DataOffsets) != 2 {
		return Tensor{}, fmt.Errorf("data_offsets has %d elements, want 2", len(rt.DataOffsets))
	}
	begin, end := rt.DataOffsets[0], rt.DataOffsets[1]
	if begin > end || end > maxOffset {
		return Tensor{}, fmt.Errorf("bad data_offsets [%d, %d]", begin, end)
	}
	want := uint64(size)
	shape := make([]int64, len(rt.Shape))
	for i, d := range rt.Shape {
		// Checked on its own: after a zero dimension the product stays 0
		// whatever follows, and shape[i] must still fit an int64.
		if d > maxOffset {
			return Tensor{}, fmt.Errorf("dimension %d too large", d)
		}
		hi, lo := bits.Mul64(want, d)
		if hi != 0 || lo > maxOffset {
			return Tensor{}, fmt.Errorf("shape %v of %s overflows", rt.Shape, rt.DType)
		}
		want = lo
		shape[i] = int64(d)
	}
	if want != end-begin {
		return Tensor{}, fmt.Errorf("%s%v needs %d bytes, data_offsets give %d", rt.DType, rt.Shape, want, end-begin)
	}
	return Tensor{Name: name, DType: rt.DType, Shape: shape, Begin: int64(begin), End: int64(end)}, nil
}
