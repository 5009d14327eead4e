package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/kiln-gpu/kiln/sdk/plugin"
	"github.com/kiln-gpu/kiln/sdk/safetensors"
)

var _ plugin.Converter = loader{}

// fp8Max is the largest finite float8 e4m3fn value: 1.75 × 2^8.
const fp8Max = 448

// scaledFP8Marker is the empty tensor ComfyUI looks for to know that a
// checkpoint's fp8 weights come with per-tensor scales
// (comfy/model_detection.py, "scaled_fp8"); its dtype says which fp8.
const scaledFP8Marker = "scaled_fp8"

// Convert rewrites a safetensors file with its weights in req.DType:
//
//   - fp16, bf16: every F32 or F64 tensor becomes F16 or BF16 (round to
//     nearest even; beyond fp16's range a value saturates to ±65504 rather
//     than become infinite);
//   - fp8_e4m3fn: every F32, F64, F16 or BF16 weight (a tensor named
//     "….weight" with at least two dimensions) becomes F8_E4M3 with a
//     per-tensor scale s = max|w| / 448, stored beside it as an F32 scalar
//     "….scale_weight" (w ≈ fp8 × s), plus the empty "scaled_fp8" marker
//     tensor: the layout of ComfyUI's scaled fp8 checkpoints. Biases and
//     norms keep their dtype, as ComfyUI keeps them.
//
// Other tensors are copied as they are. The metadata is kept, with
// kiln.convert.dtype and kiln.convert.source_dtype added and
// kiln.nominal_bytes scaled by the conversion. Tensors are written largest
// element first, so that every tensor stays aligned to its element size.
// The file is streamed: memory stays at a buffer, whatever the model's size.
func (loader) Convert(ctx context.Context, req plugin.ConvertRequest) (plugin.ConvertResult, error) {
	switch req.DType {
	case plugin.DTypeFP16, plugin.DTypeBF16, plugin.DTypeFP8E4M3:
	default:
		return plugin.ConvertResult{}, fmt.Errorf("convert to %q: %w (fp16, bf16, fp8_e4m3fn)", req.DType, plugin.ErrUnsupported)
	}
	src, err := os.Open(req.SrcPath)
	if err != nil {
		return plugin.ConvertResult{}, fmt.Errorf("convert: %w", err)
	}
	defer src.Close()
	head, size, err := readHead(req.SrcPath)
	if err != nil {
		return plugin.ConvertResult{}, fmt.Errorf("convert %s: %w", req.SrcPath, err)
	}
	mi, err := parse(req.SrcPath, head, size)
	if err != nil {
		return plugin.ConvertResult{}, fmt.Errorf("convert %s: %w", req.SrcPath, err)
	}
	plan, err := planConversion(ctx, src, mi, req.DType)
	if err != nil {
		return plugin.ConvertResult{}, fmt.Errorf("convert %s: %w", req.SrcPath, err)
	}
	dst, err := plugin.CreateFetchFile(req.DstPath)
	if err != nil {
		return plugin.ConvertResult{}, err
	}
	n, werr := plan.write(ctx, src, dst)
	if cerr := dst.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return plugin.ConvertResult{}, fmt.Errorf("convert %s: %w", req.SrcPath, werr)
	}
	return plugin.ConvertResult{Bytes: n, Format: "safetensors", ConvertedTensors: int64(plan.converted)}, nil
}

// outTensor is one tensor of the converted file: where its bytes come from
// and what they become.
type outTensor struct {
	name  string
	dtype string
	shape []int64
	// src is the source tensor (nil for a tensor made by the conversion:
	// a scale or the marker); from is its dtype.
	src  *plugin.Tensor
	from string
	// scale is the fp8 scale of a weight (stored as data for a scale
	// tensor, divided out of a weight).
	scale float32
	bytes int64
}

type conversion struct {
	tensors   []outTensor
	metadata  map[string]string
	converted int
}

// convertible reports whether a tensor of dtype becomes to, and its new
// dtype.
func convertible(t plugin.Tensor, to string) (string, bool) {
	switch to {
	case plugin.DTypeFP16, plugin.DTypeBF16:
		if t.DType == "F32" || t.DType == "F64" {
			if to == plugin.DTypeFP16 {
				return "F16", true
			}
			return "BF16", true
		}
	case plugin.DTypeFP8E4M3:
		switch t.DType {
		case "F32", "F64", "F16", "BF16":
			if len(t.Shape) >= 2 && strings.HasSuffix(t.Name, ".weight") {
				return "F8_E4M3", true
			}
		}
	}
	return t.DType, false
}

func planConversion(ctx context.Context, src *os.File, mi plugin.ModelInfo, to string) (*conversion, error) {
	c := &conversion{metadata: map[string]string{}}
	for k, v := range mi.Metadata {
		c.metadata[k] = v
	}
	names := map[string]bool{}
	for _, t := range mi.Tensors {
		names[t.Name] = true
	}
	var inBytes, outBytes int64
	sourceDTypes := map[string]int64{}
	for i := range mi.Tensors {
		t := &mi.Tensors[i]
		inBytes += t.End - t.Begin
		dt, ok := convertible(*t, to)
		o := outTensor{name: t.Name, dtype: dt, shape: t.Shape, src: t, from: t.DType, bytes: t.End - t.Begin}
		if !ok {
			c.tensors = append(c.tensors, o)
			outBytes += o.bytes
			continue
		}
		c.converted++
		sourceDTypes[t.DType] += t.End - t.Begin
		o.bytes = (t.End - t.Begin) / safetensors.DTypeSize(t.DType) * safetensors.DTypeSize(dt)
		if dt == "F8_E4M3" {
			scaleName := strings.TrimSuffix(t.Name, ".weight") + ".scale_weight"
			if names[scaleName] {
				return nil, fmt.Errorf("tensor %q: already has a scale %q (a scaled checkpoint)", t.Name, scaleName)
			}
			amax, err := absMax(ctx, src, *t)
			if err != nil {
				return nil, err
			}
			o.scale = 1
			if amax > 0 && !math.IsInf(amax, 0) {
				o.scale = float32(amax / fp8Max)
			}
			c.tensors = append(c.tensors, outTensor{name: scaleName, dtype: "F32", shape: []int64{}, scale: o.scale, bytes: 4})
			outBytes += 4
		}
		c.tensors = append(c.tensors, o)
		outBytes += o.bytes
	}
	if c.converted == 0 {
		// Already in the dtype asked for: the copy is the answer.
		c.metadata["kiln.convert.dtype"] = to
		return c, nil
	}
	if to == plugin.DTypeFP8E4M3 && !names[scaledFP8Marker] {
		c.tensors = append(c.tensors, outTensor{name: scaledFP8Marker, dtype: "F8_E4M3", shape: []int64{0}})
	}
	c.metadata["kiln.convert.dtype"] = to
	c.metadata["kiln.convert.source_dtype"] = mainDType(sourceDTypes)
	if v, err := strconv.ParseInt(c.metadata["kiln.nominal_bytes"], 10, 64); err == nil && v > 0 && inBytes > 0 {
		// A synthetic file stands for a real model: the real model shrinks
		// by the same ratio.
		c.metadata["kiln.nominal_bytes"] = strconv.FormatInt(int64(math.Round(float64(v)*float64(outBytes)/float64(inBytes))), 10)
	}
	// Largest element first: with the data section 8-aligned, every tensor
	// then starts at a multiple of its element size (torch.frombuffer maps
	// it without a copy).
	sort.SliceStable(c.tensors, func(i, j int) bool {
		return safetensors.DTypeSize(c.tensors[i].dtype) > safetensors.DTypeSize(c.tensors[j].dtype)
	})
	return c, nil
}

// mainDType is the dtype with the most bytes (ties: the name first in
// order, so that the answer does not depend on map order).
func mainDType(by map[string]int64) string {
	best, n := "", int64(-1)
	for dt, b := range by {
		if b > n || (b == n && dt < best) {
			best, n = dt, b
		}
	}
	return best
}

// chunkElems bounds how many elements are read at once.
const chunkElems = 1 << 20

// forEachValue reads t's values as float64, in order, chunk by chunk.
func forEachValue(ctx context.Context, src *os.File, t plugin.Tensor, fn func([]float64) error) error {
	es := safetensors.DTypeSize(t.DType)
	total := (t.End - t.Begin) / es
	buf := make([]byte, min(total, chunkElems)*es)
	vals := make([]float64, min(total, chunkElems))
	dec := decoderFor(t.DType)
	for off := int64(0); off < total; off += chunkElems {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(total-off, chunkElems)
		b := buf[:k*es]
		if _, err := src.ReadAt(b, t.Begin+off*es); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		v := vals[:k]
		for i := range v {
			v[i] = dec(b[int64(i)*es:])
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

// absMax is max|w| over t, NaN ignored. For the IEEE formats it compares
// magnitude bits as integers, which order finite values and infinities as
// their values do, instead of decoding every value: the first of the fp8
// conversion's two passes then costs little more than the read.
func absMax(ctx context.Context, src *os.File, t plugin.Tensor) (float64, error) {
	var bitsMax uint64
	var magnitude func([]byte) (uint64, bool) // value's magnitude bits, false for NaN
	switch t.DType {
	case "F16":
		magnitude = func(b []byte) (uint64, bool) {
			m := uint64(binary.LittleEndian.Uint16(b) & 0x7fff)
			return m, m <= 0x7c00
		}
	case "BF16":
		magnitude = func(b []byte) (uint64, bool) {
			m := uint64(binary.LittleEndian.Uint16(b) & 0x7fff)
			return m, m <= 0x7f80
		}
	case "F32":
		magnitude = func(b []byte) (uint64, bool) {
			m := uint64(binary.LittleEndian.Uint32(b) & 0x7fffffff)
			return m, m <= 0x7f800000
		}
	}
	if magnitude == nil {
		var m float64
		err := forEachValue(ctx, src, t, func(v []float64) error {
			for _, x := range v {
				if a := math.Abs(x); a > m { // NaN compares false: ignored
					m = a
				}
			}
			return nil
		})
		return m, err
	}
	es := safetensors.DTypeSize(t.DType)
	n := t.End - t.Begin
	buf := make([]byte, min(n, chunkElems*es))
	for off := int64(0); off < n; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		b := buf[:min(int64(len(buf)), n-off)]
		if _, err := src.ReadAt(b, t.Begin+off); err != nil {
			return 0, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		for i := int64(0); i+es <= int64(len(b)); i += es {
			if m, ok := magnitude(b[i:]); ok && m > bitsMax {
				bitsMax = m
			}
		}
	}
	// The largest magnitude's bits, with the sign clear, decode to max|w|.
	var le [4]byte
	switch es {
	case 2:
		binary.LittleEndian.PutUint16(le[:], uint16(bitsMax))
	case 4:
		binary.LittleEndian.PutUint32(le[:], uint32(bitsMax))
	}
	return decoderFor(t.DType)(le[:]), nil
}

func (c *conversion) write(ctx context.Context, src *os.File, dst io.Writer) (int64, error) {
	header := map[string]any{"__metadata__": c.metadata}
	var off int64
	for _, t := range c.tensors {
		header[t.name] = map[string]any{"dtype": t.dtype, "shape": t.shape, "data_offsets": []int64{off, off + t.bytes}}
		off += t.bytes
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return 0, err
	}
	// Pad the header with spaces (the format allows trailing whitespace) so
	// that the data section starts 8-aligned.
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	w := bufio.NewWriterSize(dst, 4<<20)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hj)))
	w.Write(n[:])
	w.Write(hj)
	out := make([]byte, 0, chunkElems*8)
	for _, t := range c.tensors {
		switch {
		case t.src == nil && t.bytes == 4:
			var b [4]byte
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(t.scale))
			w.Write(b[:])
		case t.src == nil:
			// The marker: no bytes.
		case t.dtype == t.from:
			if _, err := io.Copy(w, io.NewSectionReader(src, t.src.Begin, t.src.End-t.src.Begin)); err != nil {
				return 0, fmt.Errorf("tensor %q: %w", t.name, err)
			}
		default:
			enc := encoderFor(t.dtype, t.scale)
			err := forEachValue(ctx, src, *t.src, func(v []float64) error {
				out = out[:0]
				for _, x := range v {
					out = enc(out, x)
				}
				_, err := w.Write(out)
				return err
			})
			if err != nil {
				return 0, err
			}
		}
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	return 8 + int64(len(hj)) + off, nil
}

// decoderFor returns decode for one dtype, chosen once per tensor rather
// than once per value.
func decoderFor(dtype string) func([]byte) float64 {
	switch dtype {
	case "F64":
		return func(b []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b)) }
	case "F32":
		return func(b []byte) float64 { return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))) }
	case "F16":
		return func(b []byte) float64 { return float64(f16ToF32(binary.LittleEndian.Uint16(b))) }
	case "BF16":
		return func(b []byte) float64 {
			return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16))
		}
	}
	return func([]byte) float64 { return 0 }
}

// encoderFor returns encode for one dtype and scale, chosen once per tensor.
func encoderFor(dtype string, scale float32) func([]byte, float64) []byte {
	switch dtype {
	case "F16":
		return func(out []byte, x float64) []byte { return binary.LittleEndian.AppendUint16(out, f32ToF16(float32(x))) }
	case "BF16":
		return func(out []byte, x float64) []byte {
			return binary.LittleEndian.AppendUint16(out, f32ToBF16(float32(x)))
		}
	case "F8_E4M3":
		s := float64(scale)
		return func(out []byte, x float64) []byte { return append(out, f32ToE4M3(float32(x/s))) }
	}
	return func(out []byte, _ float64) []byte { return out }
}

// decode reads one little-endian value of dtype from b.
func decode(dtype string, b []byte) float64 {
	switch dtype {
	case "F64":
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	case "F32":
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	case "F16":
		return float64(f16ToF32(binary.LittleEndian.Uint16(b)))
	case "BF16":
		return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16))
	}
	return 0
}

// f32ToF16 rounds to the nearest fp16, ties to even; a finite value beyond
// fp16's range saturates to ±65504 (a weight that becomes infinite poisons
// every activation it touches), infinities and NaN stay what they are.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	switch {
	case exp == 0xff && man != 0:
		return sign | 0x7e00 // NaN
	case exp == 0xff:
		return sign | 0x7c00 // ±Inf
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7bff
	}
	if e <= 0 {
		// Subnormal (or zero): the implicit bit joins the mantissa,
		// shifted right by 1 − e more places.
		if e < -10 {
			return sign
		}
		m := man | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rem := m & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent: still correct
	}
	if r >= 0x7c00 {
		return sign | 0x7bff
	}
	return sign | uint16(r)
}

// f16ToF32 widens an fp16 exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0 && man == 0:
		return math.Float32frombits(sign)
	case exp == 0:
		v := float32(math.Ldexp(float64(man), -24)) // subnormal: exact in fp32
		if sign != 0 {
			return -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}

// f32ToBF16 rounds to the nearest bf16, ties to even; NaN stays NaN.
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7f800000 == 0x7f800000 && b&0x7fffff != 0 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// f32ToE4M3 rounds to the nearest float8 e4m3fn (bias 7, no infinities,
// 0x7f/0xff NaN), ties to even, saturating at ±448 (what torch's
// to(float8_e4m3fn) of a scaled weight does). NaN stays NaN.
func f32ToE4M3(f float32) uint8 {
	if f != f {
		return 0x7f
	}
	var sign uint8
	if math.Signbit(float64(f)) {
		sign = 0x80
		f = -f
	}
	if f >= fp8Max {
		return sign | 0x7e
	}
	bits := math.Float32bits(f)
	exp := int32(bits>>23) - 127
	if exp < -6 {
		// Subnormal in e4m3fn: multiples of 2^-9 (k = 8 is the smallest
		// normal, 0x08, which the encoding reaches by itself).
		return sign | uint8(math.RoundToEven(float64(f)*512))
	}
	man := bits & 0x7fffff
	r := uint32(exp+7)<<3 | man>>20
	rem := man & 0xfffff
	if rem > 0x80000 || (rem == 0x80000 && r&1 == 1) {
		r++ // a carry moves into the exponent: still the right value
	}
	if r > 0x7e {
		r = 0x7e // 0x7f is NaN; below 448 only rounding could reach it
	}
	return sign | uint8(r)
}

// e4m3ToF32 widens a float8 e4m3fn exactly.
func e4m3ToF32(b uint8) float32 {
	v := e4m3Abs(b & 0x7f)
	if b&0x80 != 0 {
		return -v
	}
	return v
}

func e4m3Abs(b uint8) float32 {
	if b == 0x7f {
		return float32(math.NaN())
	}
	exp, man := int(b>>3), float64(b&7)
	if exp == 0 {
		return float32(math.Ldexp(man, -9))
	}
	return float32(math.Ldexp(1+man/8, exp-7))
}
