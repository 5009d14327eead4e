package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
)

// file builds a safetensors file from a raw JSON header and a data length.
func file(header string, data int) []byte {
	b := make([]byte, 8, 8+len(header)+data)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

// length is an 8-byte header length followed by the given bytes.
func length(n uint64, rest ...byte) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
}

const good = `{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		// parseErr: Parse refuses the file. strictErr: Parse accepts it
		// and CheckContiguous refuses it.
		parseErr, strictErr bool
	}{
		{name: "good", data: file(good, 12)},
		{name: "padded", data: file(good+"    ", 12)},
		{name: "no tensors", data: file(`{}`, 0)},
		{name: "metadata null", data: file(`{"__metadata__":null}`, 0)},
		{name: "scalar", data: file(`{"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}}`, 2)},
		{name: "empty tensors", data: file(`{"z":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[0,4611686018427387904],"data_offsets":[2,2]}}`, 2)},

		{name: "short file", data: []byte{1, 2, 3}, parseErr: true},
		{name: "length 0", data: length(0, '{', '}'), parseErr: true},
		{name: "length 1", data: length(1, '{', '}'), parseErr: true},
		{name: "length over limit", data: length(MaxHeaderBytes+1, make([]byte, 16)...), parseErr: true},
		{name: "length 2^64-1", data: length(1<<64-1, make([]byte, 16)...), parseErr: true},
		{name: "length beyond eof", data: file(good, 12)[:40], parseErr: true},

		{name: "bad json", data: file(`{"a":{"dtype":"F16",`, 12), parseErr: true},
		{name: "not object", data: file(`[1,2]`, 0), parseErr: true},
		{name: "null", data: file(`null`, 0), parseErr: true},
		{name: "trailing", data: file(`{} x`, 0), parseErr: true},
		{name: "second object", data: file(`{}{}`, 0), parseErr: true},
		{name: "metadata not strings", data: file(`{"__metadata__":{"a":1}}`, 0), parseErr: true},
		{name: "tensor not object", data: file(`{"a":1}`, 0), parseErr: true},

		{name: "unknown dtype", data: file(`{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,12]}}`, 12), parseErr: true},
		{name: "no dtype", data: file(`{"a":{"shape":[2],"data_offsets":[0,2]}}`, 2), parseErr: true},
		{name: "no offsets", data: file(`{"a":{"dtype":"U8","shape":[0]}}`, 0), parseErr: true},
		{name: "one offset", data: file(`{"a":{"dtype":"U8","shape":[12],"data_offsets":[12]}}`, 12), parseErr: true},
		{name: "three offsets", data: file(`{"a":{"dtype":"U8","shape":[12],"data_offsets":[0,12,12]}}`, 12), parseErr: true},
		{name: "reversed offsets", data: file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[12,0]}}`, 12), parseErr: true},
		{name: "negative offset", data: file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, 12), parseErr: true},
		{name: "huge offset", data: file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[9223372036854775807,9223372036854775807]}}`, 0), parseErr: true},
		{name: "wrong byte count", data: file(`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}`, 12), parseErr: true},
		{name: "negative dim", data: file(`{"a":{"dtype":"U8","shape":[-12],"data_offsets":[0,12]}}`, 12), parseErr: true},
		{name: "fractional dim", data: file(`{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}`, 1), parseErr: true},
		{name: "overflowing shape", data: file(`{"a":{"dtype":"F64","shape":[4294967296,4294967296,4],"data_offsets":[0,12]}}`, 12), parseErr: true},
		{name: "overflowing element size", data: file(`{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}}`, 0), parseErr: true},
		{name: "huge dim after zero", data: file(`{"a":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]}}`, 0), parseErr: true},

		{name: "duplicate name", data: file(`{"a":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"a":{"dtype":"U8","shape":[6],"data_offsets":[6,12]}}`, 12), parseErr: true},
		{name: "duplicate metadata", data: file(`{"__metadata__":{},"__metadata__":{}}`, 0), parseErr: true},
		{name: "overlap", data: file(`{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}`, 12), parseErr: true},
		{name: "same range", data: file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, 4), parseErr: true},
		{name: "empty inside another", data: file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}`, 4), parseErr: true},
		{name: "beyond eof", data: file(`{"a":{"dtype":"F16","shape":[8],"data_offsets":[0,16]}}`, 12), parseErr: true},

		{name: "gap", data: file(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}}`, 12), strictErr: true},
		{name: "gap at start", data: file(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}`, 8), strictErr: true},
		{name: "short of eof", data: file(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 12), strictErr: true},
		{name: "data without tensors", data: file(`{}`, 1), strictErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(len(tc.data))
			h, err := Parse(tc.data, size)
			if tc.parseErr {
				if err == nil {
					t.Fatalf("Parse accepted: %+v", h)
				}
				if len(tc.data) >= 8 && !errors.Is(err, ErrFormat) {
					t.Errorf("Parse error %v does not wrap ErrFormat", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = h.CheckContiguous(size)
			if (err != nil) != tc.strictErr {
				t.Fatalf("CheckContiguous = %v, want error %v", err, tc.strictErr)
			}
			if err != nil && !errors.Is(err, ErrFormat) {
				t.Errorf("CheckContiguous error %v does not wrap ErrFormat", err)
			}
			// Read gives the same answer from a reader.
			if _, err := Read(bytes.NewReader(tc.data), size); err != nil {
				t.Errorf("Read: %v", err)
			}
		})
	}
}

func TestParseGood(t *testing.T) {
	data := append(file(good, 12), "extra head bytes are ignored"...)
	h, err := Parse(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Tensor{
		{Name: "a", DType: "F16", Shape: []int64{2, 2}, Begin: 0, End: 8},
		{Name: "b", DType: "F32", Shape: []int64{1}, Begin: 8, End: 12},
	}
	if !slices.EqualFunc(h.Tensors, want, func(a, b Tensor) bool {
		return a.Name == b.Name && a.DType == b.DType && slices.Equal(a.Shape, b.Shape) && a.Begin == b.Begin && a.End == b.End
	}) {
		t.Errorf("Tensors = %+v; want %+v", h.Tensors, want)
	}
	if h.Metadata["format"] != "pt" || h.DataOffset != 8+int64(len(good)) || h.DataBytes() != 12 || h.Tensors[0].Bytes() != 8 {
		t.Errorf("header = %+v, data bytes %d", h, h.DataBytes())
	}
}

func TestHeadSize(t *testing.T) {
	g := file(good, 12)
	for _, tc := range []struct {
		name    string
		head    []byte
		size    int64
		want    int64
		wantErr error
	}{
		{name: "length only", head: g[:8], size: int64(len(g)), want: 8 + int64(len(good))},
		{name: "size unknown", head: g[:8], want: 8 + int64(len(good))},
		{name: "short", head: g[:3], wantErr: io.ErrUnexpectedEOF},
		{name: "beyond size", head: g[:8], size: 20, wantErr: ErrFormat},
		{name: "over limit", head: length(MaxHeaderBytes + 1), wantErr: ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := HeadSize(tc.head, tc.size)
			if got != tc.want || !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Errorf("HeadSize = %d, %v; want %d, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	// A head cut inside the JSON is the caller's short read, not a bad file.
	if _, err := Parse(g[:20], int64(len(g))); !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrFormat) {
		t.Errorf("Parse of a short head: %v", err)
	}
}

func TestDTypeSize(t *testing.T) {
	for dtype, want := range map[string]int64{"BOOL": 1, "F8_E4M3": 1, "BF16": 2, "F32": 4, "I64": 8, "Q9": 0, "": 0} {
		if got := DTypeSize(dtype); got != want {
			t.Errorf("DTypeSize(%q) = %d; want %d", dtype, got, want)
		}
	}
}

// FuzzParse checks that whatever Parse accepts is safe to use: every
// tensor inside the file, sorted, without overlap, its bytes matching its
// shape. The seeds run as a normal test.
func FuzzParse(f *testing.F) {
	f.Add(file(good, 12), int64(0))
	f.Add(file(good+"  ", 12), int64(-1))
	f.Add(file(`{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}`, 12), int64(0))
	f.Add(file(`{"a":{"dtype":"F64","shape":[4294967296,4294967296,4],"data_offsets":[0,12]}}`, 12), int64(0))
	f.Add(file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, 0), int64(0))
	f.Add(length(1<<64-1), int64(16))
	f.Fuzz(func(t *testing.T, data []byte, size int64) {
		if size == 0 {
			size = int64(len(data))
		}
		h, err := Parse(data, size)
		if err != nil {
			return
		}
		if h.Metadata == nil {
			t.Fatal("nil metadata")
		}
		var end int64
		for _, ts := range h.Tensors {
			if ts.Begin < end || ts.End < ts.Begin {
				t.Fatalf("accepted bad layout: %+v", h.Tensors)
			}
			n := DTypeSize(ts.DType)
			for _, d := range ts.Shape {
				n *= d
			}
			if n != ts.Bytes() {
				t.Fatalf("tensor %q: shape %v of %s in %d bytes", ts.Name, ts.Shape, ts.DType, ts.Bytes())
			}
			end = ts.End
		}
		if end != h.DataBytes() || (size > 0 && h.DataOffset+end > size) {
			t.Fatalf("tensor data ends at %d past the %d-byte file", h.DataOffset+end, size)
		}
	})
}
