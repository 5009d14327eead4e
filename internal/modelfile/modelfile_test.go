package modelfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-gpu/kiln/internal/workflow"
)

func synthBytes(t testing.TB, spec Spec) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := Synth(&b, spec)
	if err != nil {
		t.Fatalf("Synth: %v", err)
	}
	if n != int64(b.Len()) {
		t.Fatalf("Synth returned %d, wrote %d", n, b.Len())
	}
	return b.Bytes()
}

func TestSynthRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id, family string
		wantTensor string
		wantDType  string
	}{
		{"checkpoints/v1-5-pruned-emaonly.safetensors", workflow.FamilySD15, "model.diffusion_model.input_blocks.0.0.weight", "F16"},
		{"checkpoints/sd_xl_base_1.0.safetensors", workflow.FamilySDXL, "conditioner.embedders.1.model.token_embedding.weight", "F16"},
		{"checkpoints/sd_xl_refiner_1.0.safetensors", workflow.FamilySDXL, "model.diffusion_model.label_emb.0.0.weight", "F16"},
		{"checkpoints/sd3_medium_incl_clips_t5xxlfp8.safetensors", workflow.FamilySD3, "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "F16"},
		{"diffusion_models/flux1-dev.safetensors", workflow.FamilyFlux, "double_blocks.0.img_attn.qkv.weight", "BF16"},
		{"checkpoints/flux1-dev-fp8.safetensors", workflow.FamilyFlux, "model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "F8_E4M3"},
		{"loras/epi_noiseoffset2.safetensors", workflow.FamilyLoRA, "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "F16"},
		{"vae/ae.safetensors", workflow.FamilyVAE, "decoder.conv_in.weight", "F32"},
		{"controlnet/control_v11p_sd15_canny.safetensors", workflow.FamilyControlNet, "control_model.input_hint_block.0.weight", "F16"},
		{"upscale_models/RealESRGAN_x4plus.pth", workflow.FamilyUpscaler, "model.0.weight", "F32"},
		{"text_encoders/t5xxl_fp8_e4m3fn.safetensors", workflow.FamilyTextEncoder, "encoder.block.0.layer.0.SelfAttention.q.weight", "F8_E4M3"},
		{"text_encoders/clip_l.safetensors", workflow.FamilyTextEncoder, "text_model.embeddings.token_embedding.weight", "F16"},
		{"clip_vision/clip_vision_h.safetensors", workflow.FamilyCLIPVision, "vision_model.embeddings.patch_embedding.weight", "F16"},
		{"style_models/x.safetensors", workflow.FamilyStyleModel, "model.layers.0.proj.weight", "F16"},
	} {
		t.Run(tc.family+"/"+tc.id, func(t *testing.T) {
			_, name, _ := strings.Cut(tc.id, "/")
			spec := Spec{ID: tc.id, Family: tc.family, NominalBytes: NominalSize(tc.family, name), Scale: 0.002, Seed: 7}
			data := synthBytes(t, spec)
			h, err := ReadHeader(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if h.Family() != tc.family || h.NominalBytes() != spec.NominalBytes || !h.Synthetic() || h.TotalBytes != int64(len(data)) {
				t.Errorf("header family %q nominal %d total %d", h.Family(), h.NominalBytes(), h.TotalBytes)
			}
			if h.DataOffset%8 != 0 {
				t.Errorf("data offset %d not 8-aligned", h.DataOffset)
			}
			found := false
			for _, ts := range h.Tensors {
				if ts.Name == tc.wantTensor {
					found = ts.DType == tc.wantDType
				}
			}
			if !found {
				t.Errorf("no tensor %s of %s among %d", tc.wantTensor, tc.wantDType, len(h.Tensors))
			}
			if got, want := h.TotalBytes-h.DataOffset, spec.Size(); got < want*95/100 || got > want*105/100 {
				t.Errorf("data %d bytes; want %d ± 5%%", got, want)
			}
		})
	}
}

func TestSynthDeterministic(t *testing.T) {
	spec := Spec{ID: "checkpoints/sd_xl_base_1.0.safetensors", Family: "sdxl", NominalBytes: 6_940_000_000, Scale: 0.001, Seed: 1}
	a := sha256.Sum256(synthBytes(t, spec))
	b := sha256.Sum256(synthBytes(t, spec))
	if a != b {
		t.Error("same spec gave different files")
	}
	spec.Seed = 2
	if c := sha256.Sum256(synthBytes(t, spec)); c == a {
		t.Error("different seed gave the same file")
	}
}

func TestSynthScale(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spec   Spec
		within float64
	}{
		{name: "sd15 1%", spec: Spec{ID: "checkpoints/a.safetensors", Family: "sd15", NominalBytes: 2_130_000_000, Scale: 0.01}},
		{name: "flux 0.1%", spec: Spec{ID: "diffusion_models/flux1-dev.safetensors", Family: "flux", NominalBytes: 23_800_000_000, Scale: 0.001}},
		{name: "lora full", spec: Spec{ID: "loras/a.safetensors", Family: "lora", NominalBytes: 135_000_000, Scale: 1}},
		{name: "upscaler half", spec: Spec{ID: "upscale_models/a.pth", Family: "upscaler", NominalBytes: 67_040_989, Scale: 0.5}},
		{name: "tiny", spec: Spec{ID: "vae/a.safetensors", Family: "vae", NominalBytes: 335_000_000, Scale: 1e-9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Synth(io.Discard, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.spec.Size()
			if n < want*95/100 || n > want*105/100+64<<10 {
				t.Errorf("wrote %d bytes; want about %d", n, want)
			}
		})
	}
}

func TestSynthBadSpec(t *testing.T) {
	for _, spec := range []Spec{
		{ID: "a", Family: "sd15", NominalBytes: 0, Scale: 0.1},
		{ID: "a", Family: "sd15", NominalBytes: 10, Scale: 0},
		{ID: "a", Family: "sd15", NominalBytes: 10, Scale: 2},
	} {
		if _, err := Synth(io.Discard, spec); err == nil {
			t.Errorf("Synth(%+v) succeeded", spec)
		}
	}
}

// file builds a safetensors file from a raw header and data length.
func file(header string, data int) []byte {
	b := make([]byte, 8, 8+len(header)+data)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

func TestReadHeaderCorrupt(t *testing.T) {
	good := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`
	huge := make([]byte, 16)
	binary.LittleEndian.PutUint64(huge, 200<<20)
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{name: "good", data: file(good, 12), ok: true},
		{name: "good padded", data: file(good+"    ", 12), ok: true},
		{name: "no tensors", data: file(`{}`, 0), ok: true},
		{name: "short file", data: []byte{1, 2, 3}},
		{name: "header too big", data: huge},
		{name: "header beyond eof", data: file(good, 12)[:40]},
		{name: "bad json", data: file(`{"a":{"dtype":"F16",`, 12)},
		{name: "not object", data: file(`[1,2]`, 0)},
		{name: "trailing", data: file(`{} x`, 0)},
		{name: "overlap", data: file(`{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}`, 12)},
		{name: "gap", data: file(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}}`, 12)},
		{name: "beyond eof", data: file(`{"a":{"dtype":"F16","shape":[8],"data_offsets":[0,16]}}`, 12)},
		{name: "short of eof", data: file(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 12)},
		{name: "wrong byte count", data: file(`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}`, 12)},
		{name: "unknown dtype", data: file(`{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,12]}}`, 12)},
		{name: "reversed offsets", data: file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[12,0]}}`, 12)},
		{name: "negative dim", data: file(`{"a":{"dtype":"U8","shape":[-12],"data_offsets":[0,12]}}`, 12)},
		{name: "overflowing shape", data: file(`{"a":{"dtype":"F64","shape":[4294967296,4294967296,4],"data_offsets":[0,12]}}`, 12)},
		{name: "duplicate name", data: file(`{"a":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"a":{"dtype":"U8","shape":[6],"data_offsets":[6,12]}}`, 12)},
		{name: "metadata not strings", data: file(`{"__metadata__":{"a":1}}`, 0)},
		{name: "one offset", data: file(`{"a":{"dtype":"U8","shape":[12],"data_offsets":[12]}}`, 12)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ReadHeader(bytes.NewReader(tc.data), int64(len(tc.data)))
			if tc.ok {
				if err != nil {
					t.Fatalf("ReadHeader: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadHeader accepted: %+v", h)
			}
			if len(tc.data) >= 8 && !errors.Is(err, ErrFormat) {
				t.Errorf("error %v does not wrap ErrFormat", err)
			}
		})
	}
}

func TestNominal(t *testing.T) {
	h, err := ReadHeader(bytes.NewReader(file(`{}`, 0)), 10)
	if err != nil {
		t.Fatal(err)
	}
	if h.NominalBytes() != 10 || h.Family() != "" || h.Synthetic() {
		t.Errorf("plain file: nominal %d family %q", h.NominalBytes(), h.Family())
	}
	for _, tc := range []struct {
		family, name string
		want         int64
	}{
		{"sd15", "v1-5-pruned-emaonly.safetensors", 2_130_000_000},
		{"sdxl", "sd_xl_base_1.0.safetensors", 6_940_000_000},
		{"sdxl", "sd_xl_refiner_1.0.safetensors", 6_080_000_000},
		{"sd3", "sd3_medium_incl_clips_t5xxlfp8.safetensors", 10_900_000_000},
		{"sd3", "sd3_medium_incl_clips.safetensors", 5_970_000_000},
		{"flux", "flux1-dev.safetensors", 23_800_000_000},
		{"flux", "flux1-dev-fp8.safetensors", 11_900_000_000},
		{"vae", "ae.safetensors", 335_000_000},
		{"lora", "lcm-lora-sdxl.safetensors", 394_000_000},
		{"lora", "epi_noiseoffset2.safetensors", 135_000_000},
		{"controlnet", "xinsir-controlnet-union-sdxl-1.0-promax.safetensors", 2_500_000_000},
		{"controlnet", "control_v11p_sd15_canny.pth", 723_000_000},
		{"upscaler", "RealESRGAN_x4plus.pth", 67_040_989},
		{"text_encoder", "clip_l.safetensors", 246_000_000},
		{"text_encoder", "clip_g.safetensors", 1_390_000_000},
		{"text_encoder", "t5xxl_fp16.safetensors", 9_790_000_000},
		{"text_encoder", "t5xxl_fp8_e4m3fn.safetensors", 4_890_000_000},
	} {
		t.Run(tc.family+"/"+tc.name, func(t *testing.T) {
			if got := NominalSize(tc.family, tc.name); got != tc.want {
				t.Errorf("NominalSize = %d; want %d", got, tc.want)
			}
		})
	}
}

func TestSynthStore(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("../../examples/workflows/worker-comfyui__workflow_flux1_dev.api.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := workflow.Parse(data, workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	refs := append(g.Models(), workflow.ModelRef{ID: "checkpoints/SDXL/sub/x.safetensors", Folder: "checkpoints",
		Name: "SDXL/sub/x.safetensors", Family: "sdxl"})
	// A real file already in place must survive.
	real := filepath.Join(dir, "vae", "ae.safetensors")
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, file(`{}`, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	ws, err := SynthStore(dir, refs, 0.0005, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != len(refs) {
		t.Fatalf("wrote %d; want %d", len(ws), len(refs))
	}
	for _, w := range ws {
		if w.Ref.ID == "vae/ae.safetensors" {
			if !w.Skipped {
				t.Error("real ae.safetensors overwritten")
			}
			continue
		}
		if w.Skipped {
			t.Errorf("%s skipped on first run: %s", w.Ref.ID, w.Reason)
		}
		f, err := os.Open(w.Path)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ReadHeader(f, w.Bytes)
		f.Close()
		if err != nil || h.Family() != w.Ref.Family {
			t.Errorf("%s: %v family %q", w.Path, err, h.Family())
		}
	}
	ws, err = SynthStore(dir, refs, 0.0005, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if !w.Skipped {
			t.Errorf("%s rewritten on second run", w.Ref.ID)
		}
	}
	ws, err = SynthStore(dir, refs[1:2], 0.001, 3)
	if err != nil || ws[0].Skipped {
		t.Errorf("changed scale: %+v, %v", ws, err)
	}
	if _, err := SynthStore(dir, []workflow.ModelRef{{ID: "vae/../../x"}}, 0.01, 0); err == nil {
		t.Error("traversal id accepted")
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add(file(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}`, 8))
	f.Add(file(`{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}`, 12))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		end := int64(0)
		for _, ts := range h.Tensors {
			if ts.Begin != end || ts.End < ts.Begin {
				t.Fatalf("accepted bad layout: %+v", h.Tensors)
			}
			end = ts.End
		}
		if h.DataOffset+end != int64(len(data)) {
			t.Fatal("data does not cover the file")
		}
	})
}

func BenchmarkSynth(b *testing.B) {
	spec := Spec{ID: "checkpoints/sd_xl_base_1.0.safetensors", Family: "sdxl", NominalBytes: 6_940_000_000, Scale: 0.01}
	n, err := Synth(io.Discard, spec)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(n)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Synth(io.Discard, spec); err != nil {
			b.Fatal(err)
		}
	}
}
