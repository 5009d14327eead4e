package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/kiln-gpu/kiln/sdk/plugin"
	"github.com/kiln-gpu/kiln/sdk/safetensors"
)

// srcTensor is one tensor of a synthesized source file, with its values.
type srcTensor struct {
	name  string
	dtype string
	shape []int64
	vals  []float64 // as the file stores them (already rounded to dtype)
}

// synthesize writes a safetensors file of tensors (in order) and returns
// its path.
func synthesize(t testing.TB, dir string, meta map[string]string, ts []srcTensor) string {
	t.Helper()
	header := map[string]any{"__metadata__": meta}
	var data []byte
	for _, st := range ts {
		begin := len(data)
		for _, v := range st.vals {
			switch st.dtype {
			case "F32":
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(v)))
			case "F16":
				data = binary.LittleEndian.AppendUint16(data, f32ToF16(float32(v)))
			case "BF16":
				data = binary.LittleEndian.AppendUint16(data, f32ToBF16(float32(v)))
			case "I64":
				data = binary.LittleEndian.AppendUint64(data, uint64(int64(v)))
			}
		}
		header[st.name] = map[string]any{"dtype": st.dtype, "shape": st.shape, "data_offsets": []int{begin, len(data)}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	out = append(append(out, h...), data...)
	p := filepath.Join(dir, "src.safetensors")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// values draws n weights spread over many binades (1e-4 … 3), with some
// exact zeros, signs mixed, stored as dtype stores them.
func values(rng *rand.Rand, n int, dtype string) []float64 {
	v := make([]float64, n)
	for i := range v {
		x := math.Pow(10, -4+4.5*rng.Float64())
		if rng.IntN(2) == 0 {
			x = -x
		}
		if i%17 == 0 {
			x = 0
		}
		switch dtype {
		case "F32":
			x = float64(float32(x))
		case "F16":
			x = float64(f16ToF32(f32ToF16(float32(x))))
		case "BF16":
			x = float64(math.Float32frombits(uint32(f32ToBF16(float32(x))) << 16))
		}
		v[i] = x
	}
	return v
}

func sourceTensors() []srcTensor {
	rng := rand.New(rand.NewPCG(16, 3))
	// Every fp16 value a small integer or power-of-two fraction: exactly
	// representable, so fp16 must give it back bit for bit.
	exact := make([]float64, 96)
	for i := range exact {
		exact[i] = float64(i-48) / 8
	}
	return []srcTensor{
		{name: "double_blocks.0.img_attn.qkv.weight", dtype: "F32", shape: []int64{48, 40}, vals: values(rng, 48*40, "F32")},
		{name: "double_blocks.0.img_attn.qkv.bias", dtype: "F32", shape: []int64{48}, vals: values(rng, 48, "F32")},
		{name: "double_blocks.0.exact.weight", dtype: "F32", shape: []int64{8, 12}, vals: exact},
		{name: "double_blocks.0.mlp.0.weight", dtype: "BF16", shape: []int64{24, 20}, vals: values(rng, 24*20, "BF16")},
		{name: "double_blocks.0.mlp.2.weight", dtype: "F16", shape: []int64{20, 24}, vals: values(rng, 20*24, "F16")},
		{name: "double_blocks.0.norm.scale", dtype: "F16", shape: []int64{16}, vals: values(rng, 16, "F16")},
		{name: "img_in.positions", dtype: "I64", shape: []int64{3}, vals: []float64{1, 2, 3}},
	}
}

// readBack parses a converted file and decodes every tensor to float64.
func readBack(t *testing.T, path string) (plugin.ModelInfo, map[string][]float64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mi, err := parse(path, b, int64(len(b)))
	if err != nil {
		t.Fatalf("converted file does not parse: %v", err)
	}
	if mi.TotalBytes != int64(len(b)) {
		t.Errorf("total bytes %d, file %d", mi.TotalBytes, len(b))
	}
	out := map[string][]float64{}
	for _, ts := range mi.Tensors {
		es := safetensors.DTypeSize(ts.DType)
		if ts.Begin%es != 0 {
			t.Errorf("tensor %s (%s) starts at %d: not aligned to its element", ts.Name, ts.DType, ts.Begin)
		}
		var v []float64
		for off := ts.Begin; off < ts.End; off += es {
			switch ts.DType {
			case "F8_E4M3":
				v = append(v, float64(e4m3ToF32(b[off])))
			case "I64":
				v = append(v, float64(int64(binary.LittleEndian.Uint64(b[off:]))))
			default:
				v = append(v, decode(ts.DType, b[off:]))
			}
		}
		out[ts.Name] = v
	}
	return mi, out
}

func tensorByName(mi plugin.ModelInfo, name string) (plugin.Tensor, bool) {
	for _, ts := range mi.Tensors {
		if ts.Name == name {
			return ts, true
		}
	}
	return plugin.Tensor{}, false
}

func TestConvert(t *testing.T) {
	src := sourceTensors()
	meta := map[string]string{"kiln.family": "flux", "kiln.nominal_bytes": "23802932552"}
	for _, tc := range []struct {
		to string
		// want is each source tensor's dtype after the conversion.
		want map[string]string
		// rel bounds |x' − x| / |x| for a converted value.
		rel float64
	}{
		{to: plugin.DTypeFP16, rel: math.Ldexp(1, -11), want: map[string]string{
			"double_blocks.0.img_attn.qkv.weight": "F16", "double_blocks.0.img_attn.qkv.bias": "F16",
			"double_blocks.0.exact.weight": "F16", "double_blocks.0.mlp.0.weight": "BF16",
			"double_blocks.0.mlp.2.weight": "F16", "double_blocks.0.norm.scale": "F16", "img_in.positions": "I64"}},
		{to: plugin.DTypeBF16, rel: math.Ldexp(1, -8), want: map[string]string{
			"double_blocks.0.img_attn.qkv.weight": "BF16", "double_blocks.0.img_attn.qkv.bias": "BF16",
			"double_blocks.0.exact.weight": "BF16", "double_blocks.0.mlp.0.weight": "BF16",
			"double_blocks.0.mlp.2.weight": "F16", "double_blocks.0.norm.scale": "F16", "img_in.positions": "I64"}},
		{to: plugin.DTypeFP8E4M3, rel: math.Ldexp(1, -4), want: map[string]string{
			"double_blocks.0.img_attn.qkv.weight": "F8_E4M3", "double_blocks.0.img_attn.qkv.bias": "F32",
			"double_blocks.0.exact.weight": "F8_E4M3", "double_blocks.0.mlp.0.weight": "F8_E4M3",
			"double_blocks.0.mlp.2.weight": "F8_E4M3", "double_blocks.0.norm.scale": "F16", "img_in.positions": "I64"}},
	} {
		t.Run(tc.to, func(t *testing.T) {
			dir := t.TempDir()
			srcPath := synthesize(t, dir, meta, src)
			srcInfo, err := os.Stat(srcPath)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, "dst.safetensors")
			res, err := loader{}.Convert(context.Background(), plugin.ConvertRequest{SrcPath: srcPath, DstPath: dst, DType: tc.to})
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(dst)
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes != st.Size() || res.Format != "safetensors" {
				t.Errorf("result %+v, file %d bytes", res, st.Size())
			}
			mi, got := readBack(t, dst)

			// Sizes: each tensor holds its elements at its new dtype's
			// size; the file is header + data, nothing else.
			var srcData, wantData int64
			converted := 0
			for _, s := range src {
				n := int64(len(s.vals))
				srcData += n * safetensors.DTypeSize(s.dtype)
				wantData += n * safetensors.DTypeSize(tc.want[s.name])
				if tc.want[s.name] != s.dtype {
					converted++
				}
				ts, ok := tensorByName(mi, s.name)
				if !ok {
					t.Fatalf("tensor %s missing", s.name)
				}
				if ts.DType != tc.want[s.name] || ts.End-ts.Begin != n*safetensors.DTypeSize(ts.DType) || !slicesEqual(ts.Shape, s.shape) {
					t.Errorf("%s: %s %v %d bytes; want %s %v", s.name, ts.DType, ts.Shape, ts.End-ts.Begin, tc.want[s.name], s.shape)
				}
			}
			if tc.to == plugin.DTypeFP8E4M3 {
				wantData += 4 * int64(converted) // one F32 scale per weight
			}
			if int64(converted) != res.ConvertedTensors {
				t.Errorf("converted %d tensors, want %d", res.ConvertedTensors, converted)
			}
			if data := st.Size() - mi.Tensors[0].Begin; data != wantData {
				t.Errorf("data section %d bytes, want %d", data, wantData)
			}
			if st.Size() >= srcInfo.Size() {
				t.Errorf("converted file %d bytes is not smaller than the source's %d", st.Size(), srcInfo.Size())
			}
			// Headers: metadata kept and annotated; the nominal size
			// shrinks with the data.
			if mi.Family != "flux" || mi.Metadata["kiln.convert.dtype"] != tc.to || mi.Metadata["kiln.convert.source_dtype"] == "" {
				t.Errorf("metadata %v, family %q", mi.Metadata, mi.Family)
			}
			nominal, _ := strconv.ParseFloat(meta["kiln.nominal_bytes"], 64)
			if want := nominal * float64(wantData) / float64(srcData); math.Abs(float64(mi.NominalBytes)-want) > 1 {
				t.Errorf("nominal bytes %d, want %.0f", mi.NominalBytes, want)
			}

			// Values, within the format's tolerance.
			for _, s := range src {
				out := got[s.name]
				scale := 1.0
				if tc.want[s.name] == "F8_E4M3" {
					sc, ok := got[s.name[:len(s.name)-len(".weight")]+".scale_weight"]
					if !ok || len(sc) != 1 || sc[0] <= 0 {
						t.Fatalf("%s: scale %v", s.name, sc)
					}
					scale = sc[0]
					amax := 0.0
					for _, x := range s.vals {
						amax = math.Max(amax, math.Abs(x))
					}
					if math.Abs(scale-amax/fp8Max) > amax/fp8Max*1e-6 {
						t.Errorf("%s: scale %g, want max|w|/448 = %g", s.name, scale, amax/fp8Max)
					}
				}
				for i, x := range s.vals {
					y := out[i] * scale
					switch {
					case tc.want[s.name] == s.dtype:
						if y != x {
							t.Fatalf("%s[%d]: copied tensor changed: %g → %g", s.name, i, x, y)
						}
					case s.name == "double_blocks.0.exact.weight" && tc.to != plugin.DTypeFP8E4M3:
						if y != x {
							t.Fatalf("%s[%d]: representable value %g came back as %g", s.name, i, x, y)
						}
					default:
						// Below the smallest normal (2^-6 · scale for fp8,
						// 2^-14 for fp16) the step is fixed: half of it.
						floor := map[string]float64{"F16": math.Ldexp(1, -25), "BF16": 0, "F8_E4M3": math.Ldexp(scale, -10)}[tc.want[s.name]]
						if d := math.Abs(y - x); d > tc.rel*math.Abs(x)+floor {
							t.Fatalf("%s[%d]: %g → %g: error %g above %g·|x| + %g", s.name, i, x, y, d, tc.rel, floor)
						}
					}
				}
			}
			if tc.to == plugin.DTypeFP8E4M3 {
				if m, ok := tensorByName(mi, scaledFP8Marker); !ok || m.DType != "F8_E4M3" || m.End != m.Begin {
					t.Errorf("scaled_fp8 marker: %+v %v", m, ok)
				}
			}

			// The same input gives the same bytes: the converted artifact's
			// sha256 is stable across restarts and retries.
			again := filepath.Join(dir, "again.safetensors")
			if _, err := (loader{}).Convert(context.Background(), plugin.ConvertRequest{SrcPath: srcPath, DstPath: again, DType: tc.to}); err != nil {
				t.Fatal(err)
			}
			if a, b := fileSum(t, dst), fileSum(t, again); a != b {
				t.Errorf("two conversions differ: %x vs %x", a, b)
			}
		})
	}
}

func TestConvertRefuses(t *testing.T) {
	dir := t.TempDir()
	srcPath := synthesize(t, dir, nil, sourceTensors())
	dst := filepath.Join(dir, "dst.safetensors")
	for _, dt := range []string{"", "int4", "fp8_e5m2"} {
		if _, err := (loader{}).Convert(context.Background(), plugin.ConvertRequest{SrcPath: srcPath, DstPath: dst, DType: dt}); !errors.Is(err, plugin.ErrUnsupported) {
			t.Errorf("convert to %q: %v, want ErrUnsupported", dt, err)
		}
	}
	// A file converted to fp8 already carries scales: converting it again
	// would scale twice.
	fp8 := filepath.Join(dir, "fp8.safetensors")
	if _, err := (loader{}).Convert(context.Background(), plugin.ConvertRequest{SrcPath: srcPath, DstPath: fp8, DType: plugin.DTypeFP8E4M3}); err != nil {
		t.Fatal(err)
	}
	res, err := loader{}.Convert(context.Background(), plugin.ConvertRequest{SrcPath: fp8, DstPath: dst, DType: plugin.DTypeFP8E4M3})
	if err != nil || res.ConvertedTensors != 0 {
		t.Errorf("fp8 → fp8: %+v, %v; want a copy with nothing converted", res, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk"), []byte("not a model at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := (loader{}).Convert(context.Background(), plugin.ConvertRequest{SrcPath: filepath.Join(dir, "junk"), DstPath: dst, DType: plugin.DTypeFP16}); err == nil {
		t.Error("converting a file that is not safetensors succeeded")
	}
	if _, err := (loader{}).Convert(context.Background(), plugin.ConvertRequest{SrcPath: srcPath, DstPath: "relative.safetensors", DType: plugin.DTypeFP16}); err == nil {
		t.Error("a relative destination was accepted")
	}
}

// TestFloatCodecs checks the scalar conversions against every value of the
// narrow formats: each one round-trips, and a value between two neighbours
// rounds to the nearer (ties to even).
func TestFloatCodecs(t *testing.T) {
	for c := 0; c < 256; c++ {
		b := uint8(c)
		v := e4m3ToF32(b)
		if b&0x7f == 0x7f {
			if v == v || f32ToE4M3(v)&0x7f != 0x7f {
				t.Errorf("e4m3 %#02x: NaN handling", b)
			}
			continue
		}
		if got := f32ToE4M3(v); got != b {
			t.Errorf("e4m3 %#02x = %g encodes back as %#02x", b, v, got)
		}
	}
	for _, tc := range []struct {
		in   float32
		want float32
	}{
		{1.0625, 1}, {1.1875, 1.25}, {1.125, 1.125}, {1000, 448}, {-1000, -448}, {464, 448},
		// Subnormals step by 2^-9; halfway rounds to the even step.
		{float32(math.Ldexp(1, -10)), 0}, {float32(math.Ldexp(3, -10)), float32(math.Ldexp(2, -9))},
		{float32(math.Ldexp(5, -10)), float32(math.Ldexp(2, -9))}, {float32(math.Ldexp(7, -10)), float32(math.Ldexp(4, -9))},
	} {
		if got := e4m3ToF32(f32ToE4M3(tc.in)); got != tc.want {
			t.Errorf("e4m3(%g) = %g, want %g", tc.in, got, tc.want)
		}
	}
	for h := 0; h < 1<<16; h++ {
		v := f16ToF32(uint16(h))
		if v != v {
			if got := f32ToF16(v); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Errorf("f16 NaN %#04x encodes as %#04x", h, got)
			}
			continue
		}
		if math.IsInf(float64(v), 0) {
			continue
		}
		if got := f32ToF16(v); got != uint16(h) {
			t.Fatalf("f16 %#04x = %g encodes back as %#04x", h, v, got)
		}
		// The midpoint to the next value up rounds to the even one.
		if h&0x7fff < 0x7bff {
			next := f16ToF32(uint16(h + 1))
			mid := float32((float64(v) + float64(next)) / 2)
			want := uint16(h)
			if h&1 == 1 {
				want = uint16(h + 1)
			}
			if got := f32ToF16(mid); got != want {
				t.Fatalf("f16 midpoint %g between %#04x and %#04x → %#04x, want %#04x", mid, h, h+1, got, want)
			}
		}
	}
	if got := f16ToF32(f32ToF16(1e6)); got != 65504 {
		t.Errorf("fp16 of 1e6 = %g, want the saturated 65504", got)
	}
	if got := math.Float32frombits(uint32(f32ToBF16(1+1.0/256)) << 16); got != 1 {
		t.Errorf("bf16 tie 1+2^-8 = %g, want 1 (to even)", got)
	}
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// BenchmarkConvert converts a 64 MiB file of 16 weights (BF16 to fp8, F32
// to fp16) and reports the source bytes read per second.
func BenchmarkConvert(b *testing.B) {
	for _, tc := range []struct{ from, to string }{{"BF16", plugin.DTypeFP8E4M3}, {"F32", plugin.DTypeFP16}} {
		b.Run(tc.from+"-to-"+tc.to, func(b *testing.B) {
			dir := b.TempDir()
			rng := rand.New(rand.NewPCG(1, 2))
			var ts []srcTensor
			per := (64 << 20) / 16 / int(safetensors.DTypeSize(tc.from))
			for i := range 16 {
				ts = append(ts, srcTensor{name: "blocks." + strconv.Itoa(i) + ".weight", dtype: tc.from,
					shape: []int64{int64(per / 1024), 1024}, vals: values(rng, per, tc.from)})
			}
			src := synthesize(b, dir, map[string]string{"kiln.family": "flux"}, ts)
			st, _ := os.Stat(src)
			dst := filepath.Join(dir, "dst.safetensors")
			b.SetBytes(st.Size())
			b.ResetTimer()
			for range b.N {
				if _, err := (loader{}).Convert(context.Background(), plugin.ConvertRequest{SrcPath: src, DstPath: dst, DType: tc.to}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
