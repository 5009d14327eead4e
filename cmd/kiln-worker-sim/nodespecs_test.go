package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var updateSpecs = flag.Bool("update", false, "rewrite internal/api/comfy/testdata/object_info.json")

// objectInfoGolden is the sim's /object_info as the kernel's API tests use it.
var objectInfoGolden = filepath.Join("..", "..", "internal", "api", "comfy", "testdata", "object_info.json")

func TestNodeSpecsCoverNodeTable(t *testing.T) {
	specs := nodeSpecs()
	for _, class := range nodeClasses() {
		if specs[class] == nil {
			t.Errorf("node class %s has no spec", class)
		}
	}
	if got, want := len(specClasses()), len(specs); got != want {
		t.Errorf("%d spec rows for %d executable classes: a spec names a class the sim does not run", got, want)
	}
}

func TestNodeSpecsGolden(t *testing.T) {
	got, err := json.MarshalIndent(nodeSpecs(), "", " ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *updateSpecs {
		if err := os.MkdirAll(filepath.Dir(objectInfoGolden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(objectInfoGolden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(objectInfoGolden)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/kiln-worker-sim -run TestNodeSpecsGolden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run go test ./cmd/kiln-worker-sim -run TestNodeSpecsGolden -update", objectInfoGolden)
	}
}

func TestRunReportsNodeStarts(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := h.loadSD15LoRA()
	_, all, err := h.runAll(context.Background(), "starts", wf)
	if err != nil {
		t.Fatal(err)
	}
	var starts []string
	stepsBeforeStart := false
	for _, p := range all {
		if p.Max == 0 {
			starts = append(starts, p.Node)
			continue
		}
		if !slices.Contains(starts, p.Node) {
			stepsBeforeStart = true
		}
	}
	if len(starts) != len(wf) || stepsBeforeStart {
		t.Errorf("node starts %v for %d nodes (steps before their node's start: %v)", starts, len(wf), stepsBeforeStart)
	}
}

// TestNodeSpecsMatchComfyUI checks the /object_info fields that ComfyUI's
// server.py node_info fills beyond inputs and outputs, against values in
// ComfyUI's nodes.py, comfy_extras and comfy/samplers.py.
func TestNodeSpecsMatchComfyUI(t *testing.T) {
	specs := nodeSpecs()
	for class := range classMeta {
		if specs[class] == nil {
			t.Errorf("classMeta names %s, which the sim does not run", class)
		}
	}
	entry := func(class string) map[string]any { return specs[class].(map[string]any) }
	for _, tc := range []struct {
		class, key string
		want       any
	}{
		{"CheckpointLoaderSimple", "display_name", "Load Checkpoint"},
		{"CLIPTextEncode", "display_name", "CLIP Text Encode (Prompt)"},
		{"KSampler", "display_name", "KSampler"},
		{"KSamplerSelect", "display_name", "KSamplerSelect"}, // no mapping: the class name
		{"VAEDecode", "description", "Decodes latent images back into pixel space images."},
		{"ControlNetApply", "deprecated", true},
		{"LoadImageOutput", "experimental", true},
		{"LoadImageOutput", "display_name", "Load Image (from Outputs)"},
		{"DiffusersLoader", "display_name", "Load Diffusers Model (DEPRECATED)"},
		{"DiffusersLoader", "deprecated", true},
		{"DiffusersLoader", "category", "model/loaders"},
		{"KSampler", "category", "model/sampling"},
		{"LoadImageMask", "category", "image"},
		{"PreviewImage", "description", "Preview the images without saving them to the ComfyUI output directory."},
		{"SaveImage", "essentials_category", "Basics"},
		{"PreviewImage", "essentials_category", "Basics"}, // inherited from SaveImage
		{"LoraLoaderModelOnly", "essentials_category", "Image Generation"},
		{"KSampler", "is_input_list", false},
		{"KSampler", "has_intermediate_output", false},
		{"CLIPTextEncodeSD3", "python_module", "comfy_extras.nodes_sd3"},
		{"KSampler", "python_module", "nodes"},
		{"SaveImageWebsocket", "python_module", "custom_nodes.websocket_image_save"},
		{"SaveImageWebsocket", "display_name", "Save Image (Websocket)"},
	} {
		if got := entry(tc.class)[tc.key]; got != tc.want {
			t.Errorf("%s %s = %v, want %v", tc.class, tc.key, got, tc.want)
		}
	}
	// deprecated and experimental only when true, as ComfyUI sends them.
	for class, e := range specs {
		e := e.(map[string]any)
		if v, ok := e["deprecated"]; ok && v != true {
			t.Errorf("%s: deprecated %v", class, v)
		}
		if v, ok := e["experimental"]; ok && v != true {
			t.Errorf("%s: experimental %v", class, v)
		}
	}
	ks := entry("KSampler")
	req := ks["input"].(map[string]any)["required"].(map[string]any)
	samplers := req["sampler_name"].([]any)[0].([]any)
	for _, name := range []string{"euler", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "gradient_estimation_cfg_pp", "sa_solver", "sa_solver_pece", "uni_pc_bh2"} {
		if !slices.Contains(samplers, any(name)) {
			t.Errorf("KSampler sampler_name lacks %s", name)
		}
	}
	cfgOpts := req["cfg"].([]any)[1].(map[string]any)
	if cfgOpts["step"] != 0.1 || cfgOpts["round"] != 0.01 || cfgOpts["tooltip"] == nil {
		t.Errorf("KSampler cfg options %v", cfgOpts)
	}
	if tips := ks["output_tooltips"].([]string); len(tips) != 1 {
		t.Errorf("KSampler output_tooltips %v", tips)
	}
	text := entry("CLIPTextEncode")["input"].(map[string]any)["required"].(map[string]any)["text"].([]any)[1].(map[string]any)
	if text["dynamicPrompts"] != true || text["multiline"] != true {
		t.Errorf("CLIPTextEncode text options %v", text)
	}
	save := entry("SaveImage")["input"].(map[string]any)
	if hidden, _ := save["hidden"].(map[string]any); hidden["prompt"] != "PROMPT" || hidden["extra_pnginfo"] != "EXTRA_PNGINFO" {
		t.Errorf("SaveImage hidden inputs %v", save["hidden"])
	}
}

// TestCoreSpecsMatchNodesPy checks the input specs of core classes against
// nodes.py where the sim's once differed: a combo value ComfyUI accepts and
// kiln refused (value_not_in_list), a range that refused a valid value, a
// combo whose first value (the frontend's default) differed, outputs and
// widget options.
func TestCoreSpecsMatchNodesPy(t *testing.T) {
	specs := nodeSpecs()
	input := func(class, name string) []any {
		e := specs[class].(map[string]any)["input"].(map[string]any)
		for _, group := range []string{"required", "optional"} {
			if g, ok := e[group].(map[string]any); ok && g[name] != nil {
				return g[name].([]any)
			}
		}
		t.Fatalf("%s has no input %s", class, name)
		return nil
	}
	options := func(class, name string) map[string]any {
		s := input(class, name)
		if len(s) < 2 {
			return map[string]any{}
		}
		return s[1].(map[string]any)
	}
	combo := func(class, name string) []any { return input(class, name)[0].([]any) }
	for _, tc := range []struct{ class, input, value string }{
		{"LatentUpscale", "upscale_method", "bislerp"},
		{"LatentUpscaleBy", "upscale_method", "bislerp"},
		{"CLIPLoader", "type", "flux2"},
		{"CLIPLoader", "type", "hunyuan_image"},
		{"DualCLIPLoader", "type", "hunyuan_video_15"},
		{"DualCLIPLoader", "type", "kandinsky5"},
		{"CLIPLoader", "device", "cpu"},
	} {
		if !slices.Contains(combo(tc.class, tc.input), any(tc.value)) {
			t.Errorf("%s.%s does not accept %q", tc.class, tc.input, tc.value)
		}
	}
	if slices.Contains(combo("CLIPLoader", "type"), any("sdxl")) {
		t.Error(`CLIPLoader.type accepts "sdxl", a DualCLIPLoader type`)
	}
	for _, tc := range []struct{ class, input, first string }{
		{"KSamplerAdvanced", "return_with_leftover_noise", "disable"},
		{"KSamplerAdvanced", "add_noise", "enable"},
		{"CLIPLoader", "type", "stable_diffusion"},
		{"DualCLIPLoader", "type", "sdxl"},
	} {
		if got := combo(tc.class, tc.input)[0]; got != tc.first {
			t.Errorf("%s.%s's first value (the default) is %v, want %s", tc.class, tc.input, got, tc.first)
		}
	}
	if o := options("LatentFromBatch", "batch_index"); fmt.Sprint(o["min"], o["max"]) != "-16384 16384" {
		t.Errorf("LatentFromBatch.batch_index range %v..%v, want ±16384 (negative counts from the end)", o["min"], o["max"])
	}
	for _, tc := range []struct {
		class, input, key string
		want              any
	}{
		{"EmptyLatentImage", "width", "default", int64(1024)},
		{"ConditioningSetArea", "width", "step", int64(8)},
		{"LatentUpscale", "height", "step", int64(8)},
		{"ImageScale", "width", "step", int64(1)},
		{"CLIPSetLastLayer", "stop_at_clip_layer", "step", int64(1)},
		{"CLIPSetLastLayer", "stop_at_clip_layer", "advanced", true},
		{"VAEDecodeTiled", "tile_size", "step", int64(32)},
		{"VAEDecodeTiled", "temporal_size", "tooltip", temporalSizeDecode},
		{"VAEEncodeTiled", "temporal_size", "tooltip", temporalSizeEncode},
		{"UNETLoader", "weight_dtype", "advanced", true},
		{"ImagePadForOutpaint", "feathering", "advanced", true},
		{"KSamplerAdvanced", "end_at_step", "advanced", true},
	} {
		if got := options(tc.class, tc.input)[tc.key]; got != tc.want {
			t.Errorf("%s.%s %s = %v, want %v", tc.class, tc.input, tc.key, got, tc.want)
		}
	}
	// SaveImage returns its images, PreviewImage (its subclass) too, and
	// SaveLatent its samples: graphs may go on from them.
	for class, want := range map[string][2]string{"SaveImage": {"IMAGE", "images"}, "PreviewImage": {"IMAGE", "images"}, "SaveLatent": {"LATENT", "samples"}} {
		e := specs[class].(map[string]any)
		if out, names := e["output"].([]any), e["output_name"].([]any); len(out) != 1 || out[0] != want[0] || names[0] != want[1] || e["output_node"] != true {
			t.Errorf("%s: output %v %v (output node %v), want [%s] [%s], an output node", class, e["output"], e["output_name"], e["output_node"], want[0], want[1])
		}
	}
	if tips := specs["LoraLoaderModelOnly"].(map[string]any)["output_tooltips"].([]string); len(tips) != 2 {
		t.Errorf("LoraLoaderModelOnly output_tooltips %v, want LoraLoader's two (inherited)", tips)
	}
	if a := specs["KSampler"].(map[string]any)["search_aliases"].([]string); !slices.Contains(a, "txt2img") {
		t.Errorf("KSampler search_aliases %v", a)
	}
	if a, ok := specs["KSamplerAdvanced"].(map[string]any)["search_aliases"].([]string); !ok || a == nil || len(a) != 0 {
		t.Errorf("KSamplerAdvanced search_aliases %#v, want [] (server.py's default)", specs["KSamplerAdvanced"].(map[string]any)["search_aliases"])
	}
}
