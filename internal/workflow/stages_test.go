package workflow

import (
	"os"
	"reflect"
	"testing"
)

func TestStages(t *testing.T) {
	for _, tc := range []struct {
		file string
		// models per stage, and whether the stage samples / decodes
		want     [][]string
		samplers []int
		decodes  []bool
	}{
		{
			// Text encoders, then the diffusion model, then the VAE: the
			// Flux graph never needs all four models at once.
			file: "worker-comfyui__workflow_flux1_dev.api.json",
			want: [][]string{
				{"text_encoders/t5xxl_fp8_e4m3fn.safetensors", "text_encoders/clip_l.safetensors"},
				{"diffusion_models/flux1-dev.safetensors"},
				{"vae/ae.safetensors"},
			},
			samplers: []int{0, 1, 0},
			decodes:  []bool{false, false, true},
		},
		{
			file:     "comfyui__tests_inference_workflows_flux-0.api.json",
			want:     [][]string{{"text_encoders/clip_l.safetensors", "text_encoders/t5xxl_fp16.safetensors"}, {"diffusion_models/flux1-dev.safetensors"}, {"vae/ae.safetensors"}},
			samplers: []int{0, 1, 0},
			decodes:  []bool{false, false, true},
		},
		{
			// One checkpoint holds the text encoders, the model and the
			// VAE: one stage.
			file:     "worker-comfyui__workflow_sd3.api.json",
			want:     [][]string{{"checkpoints/sd3_medium_incl_clips_t5xxlfp8.safetensors"}},
			samplers: []int{1},
			decodes:  []bool{true},
		},
		{
			// The LoRA patches the checkpoint's model and clip: needed
			// together with it from the first text encode on.
			file:     "comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json",
			want:     [][]string{{"checkpoints/v1-5-pruned-emaonly.safetensors", "loras/epi_noiseoffset2.safetensors"}},
			samplers: []int{1},
			decodes:  []bool{true},
		},
		{
			// The control net rides in the conditioning to the sampler.
			file:     "comfyui__tests_inference_workflows_sdxl-union-controlnet-0.api.json",
			want:     [][]string{{"checkpoints/sd_xl_base_1.0.safetensors", "controlnet/xinsir-controlnet-union-sdxl-1.0-promax.safetensors"}},
			samplers: []int{1},
			decodes:  []bool{true},
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile("../../examples/workflows/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			g, err := Parse(data, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			stages := g.Stages()
			var got [][]string
			nodes := 0
			for _, s := range stages {
				got = append(got, s.Models)
				nodes += len(s.Nodes)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("stage models = %q; want %q", got, tc.want)
			}
			if nodes != g.Len() {
				t.Errorf("stages hold %d nodes; the graph has %d", nodes, g.Len())
			}
			for i, s := range stages {
				if len(s.Samplers) != tc.samplers[i] || s.Decodes != tc.decodes[i] {
					t.Errorf("stage %d: %d samplers, decodes %v; want %d, %v", i, len(s.Samplers), s.Decodes, tc.samplers[i], tc.decodes[i])
				}
			}
		})
	}
}

func TestWeightDType(t *testing.T) {
	data, err := os.ReadFile("../../examples/workflows/worker-comfyui__workflow_flux1_dev.api.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := Parse(data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range g.Models() {
		want := ""
		if m.ID == "diffusion_models/flux1-dev.safetensors" {
			want = "fp8_e4m3fn"
		}
		if m.WeightDType != want {
			t.Errorf("%s: weight dtype %q; want %q", m.ID, m.WeightDType, want)
		}
	}
}
