package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
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
		{"DiffusersLoader", "display_name", "DiffusersLoader"}, // no mapping, and not DEPRECATED: only its category says so
		{"DiffusersLoader", "category", "advanced/loaders/deprecated"},
		{"CLIPTextEncodeSD3", "python_module", "comfy_extras.nodes_sd3"},
		{"KSampler", "python_module", "nodes"},
		{"SaveImageWebsocket", "python_module", "custom_nodes.websocket_image_save"},
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
