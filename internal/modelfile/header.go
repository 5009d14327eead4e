package modelfile

import (
	"fmt"
	"io"
	"strconv"

	"github.com/kiln-gpu/kiln/sdk/safetensors"
)

// MaxHeaderBytes bounds the JSON header; real files stay far below it.
const MaxHeaderBytes = safetensors.MaxHeaderBytes

// Metadata keys kiln writes into synthetic files.
const (
	MetaSynth   = "kiln.synth"
	MetaFamily  = "kiln.family"
	MetaNominal = "kiln.nominal_bytes"
	MetaScale   = "kiln.scale"
	MetaID      = "kiln.id"
)

// ErrFormat is wrapped by every error about a malformed file. It is
// safetensors.ErrFormat: kernel and loader plugins share one parser.
var ErrFormat = safetensors.ErrFormat

// DTypeSize returns the size of one element of dtype, or 0 if unknown.
func DTypeSize(dtype string) int64 { return safetensors.DTypeSize(dtype) }

// Tensor is one entry of the tensor table. Begin and End are offsets from
// the start of the data section (Header.DataOffset).
type Tensor = safetensors.Tensor

// Header is a parsed safetensors header whose tensors fill the file exactly.
type Header struct {
	// Header holds the metadata, the tensors in file order and the data
	// offset.
	safetensors.Header
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

// ReadHeader reads and checks the header of a safetensors file of the given
// size: everything safetensors.Parse checks (a bounded header length, well
// formed JSON with no duplicate names, known dtypes, byte ranges as long as
// shape and dtype say, no overlap), and, stricter than the format, that the
// ranges run contiguous from 0 to the end of the file. The tiers size and
// copy a file by its header, so a byte no tensor accounts for is refused.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	h, err := safetensors.Read(r, size)
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	if err := h.CheckContiguous(size); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	return &Header{Header: *h, TotalBytes: size}, nil
}
