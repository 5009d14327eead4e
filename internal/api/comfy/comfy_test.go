package comfy

import (
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// simSpecs are kiln-worker-sim's node specs (kept current by its
// TestNodeSpecsGolden).
func simSpecs(t testing.TB) *NodeSpecs {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "object_info.json"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := parseNodeSpecsJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// testEnv accepts every model except those named "missing*".
func testEnv(t testing.TB) PromptEnv {
	return PromptEnv{Limits: workflow.Limits{}.WithDefaults(), Specs: simSpecs(t),
		ModelExists: func(folder, name string) bool { return !strings.HasPrefix(name, "missing") },
		ModelNames:  func(string) []string { return []string{"a.safetensors"} }}
}

const txt2img = `{
 "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 4, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
   "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}
}`

// edit returns txt2img with node id's input set to v (nil deletes it).
func edit(t *testing.T, id, input string, v any) string {
	t.Helper()
	var g map[string]map[string]any
	if err := json.Unmarshal([]byte(txt2img), &g); err != nil {
		t.Fatal(err)
	}
	in := g[id]["inputs"].(map[string]any)
	if v == nil {
		delete(in, input)
	} else {
		in[input] = v
	}
	b, _ := json.Marshal(g)
	return string(b)
}

func TestDecodePromptErrors(t *testing.T) {
	for _, tc := range []struct {
		name         string
		prompt       string
		wantType     string
		wantNode     string // node_errors entry, with this error type
		wantNodeType string
	}{
		{name: "no prompt", prompt: "", wantType: "no_prompt"},
		{name: "no outputs", prompt: `{"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}}}`, wantType: "prompt_no_outputs"},
		{name: "missing node type", prompt: `{"1": {"class_type": "ImageRequestParameter", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}`, wantType: "missing_node_type"},
		{name: "required input missing", prompt: edit(t, "3", "steps", nil), wantType: "prompt_outputs_failed_validation", wantNode: "3", wantNodeType: "required_input_missing"},
		{name: "bad linked input", prompt: edit(t, "3", "model", []any{"4"}), wantType: "prompt_outputs_failed_validation", wantNode: "3", wantNodeType: "bad_linked_input"},
		{name: "link to a missing node", prompt: edit(t, "3", "model", []any{"99", 0}), wantType: "prompt_outputs_failed_validation", wantNode: "3", wantNodeType: "bad_linked_input"},
		{name: "return type mismatch", prompt: edit(t, "3", "model", []any{"4", 1}), wantType: "prompt_outputs_failed_validation", wantNode: "3", wantNodeType: "return_type_mismatch"},
		{name: "invalid input type", prompt: edit(t, "3", "steps", "many"), wantType: "prompt_outputs_failed_validation", wantNode: "3", wantNodeType: "invalid_input_type"},
		{name: "value not in list", prompt: edit(t, "3", "sampler_name", "warp_drive"), wantType: "prompt_outputs_failed_validation", wantNode: "3", wantNodeType: "value_not_in_list"},
		{name: "checkpoint not in catalog", prompt: edit(t, "4", "ckpt_name", "missing.safetensors"), wantType: "prompt_outputs_failed_validation", wantNode: "4", wantNodeType: "value_not_in_list"},
		{name: "value smaller than min", prompt: edit(t, "3", "steps", 0), wantType: "prompt_outputs_failed_validation", wantNode: "3", wantNodeType: "value_smaller_than_min"},
		{name: "value bigger than max", prompt: edit(t, "3", "denoise", 2), wantType: "prompt_outputs_failed_validation", wantNode: "3", wantNodeType: "value_bigger_than_max"},
		{name: "cycle", prompt: edit(t, "6", "clip", []any{"8", 0}), wantType: "prompt_outputs_failed_validation", wantNode: "6", wantNodeType: "return_type_mismatch"},
		{name: "dependency cycle", prompt: `{"1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}}, "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["2", 0]}}}`, wantType: "dependency_cycle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"client_id": "c1"}`
			if tc.prompt != "" {
				body = `{"client_id": "c1", "prompt": ` + tc.prompt + `}`
			}
			_, perr := DecodePrompt([]byte(body), testEnv(t))
			if perr == nil {
				t.Fatal("accepted")
			}
			if perr.Status != http.StatusBadRequest || perr.Err.Type != tc.wantType || perr.Err.Message == "" || perr.Err.ExtraInfo == nil || perr.NodeErrors == nil {
				t.Fatalf("error = %+v, want type %s", perr, tc.wantType)
			}
			b, _ := json.Marshal(perr)
			var shape struct {
				Error      map[string]any            `json:"error"`
				NodeErrors map[string]map[string]any `json:"node_errors"`
			}
			if err := json.Unmarshal(b, &shape); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"type", "message", "details", "extra_info"} {
				if _, ok := shape.Error[k]; !ok {
					t.Errorf("error has no %q: %s", k, b)
				}
			}
			if tc.wantNode == "" {
				return
			}
			ne := perr.NodeErrors[tc.wantNode]
			if ne == nil || len(ne.Errors) == 0 || ne.Errors[0].Type != tc.wantNodeType || ne.ClassType == "" || len(ne.DependentOutputs) == 0 {
				t.Fatalf("node_errors = %s, want %s on node %s", b, tc.wantNodeType, tc.wantNode)
			}
		})
	}
}

// TestDecodePromptMissingNodeType checks missing_node_type as the current
// validate_prompt words it: a node without class_type (older releases
// answered invalid_prompt) and an unknown class, named by its title.
func TestDecodePromptMissingNodeType(t *testing.T) {
	for _, tc := range []struct {
		name, node    string
		wantMessage   string
		wantClass     any
		wantTitle     any
		wantNodeInErr string
	}{
		{"no class_type", `{"inputs": {}}`, "Node 'ID #1' has no class_type. The workflow may be corrupted or a custom node is missing.", nil, nil, "1"},
		{"no class_type, titled", `{"inputs": {}, "_meta": {"title": "Upscale"}}`, "Node 'Upscale' has no class_type. The workflow may be corrupted or a custom node is missing.", nil, "Upscale", "1"},
		{"unknown class", `{"class_type": "Foo", "inputs": {}}`, "Node 'Foo' not found. The custom node may not be installed.", "Foo", "Foo", "1"},
		{"unknown class, titled", `{"class_type": "Foo", "inputs": {}, "_meta": {"title": "My Foo"}}`, "Node 'My Foo' not found. The custom node may not be installed.", "Foo", "My Foo", "1"},
		{"class_type not a string", `{"class_type": 7, "inputs": {}}`, "Node '7' not found. The custom node may not be installed.", json.Number("7"), "7", "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"prompt": {"1": ` + tc.node + `, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}}`
			_, perr := DecodePrompt([]byte(body), testEnv(t))
			if perr == nil {
				t.Fatal("accepted")
			}
			e := perr.Err
			if perr.Status != http.StatusBadRequest || e.Type != "missing_node_type" || e.Message != tc.wantMessage || e.Details != "Node ID '#1'" {
				t.Fatalf("error %+v, want missing_node_type %q", e, tc.wantMessage)
			}
			if e.ExtraInfo["node_id"] != tc.wantNodeInErr || e.ExtraInfo["class_type"] != tc.wantClass || e.ExtraInfo["node_title"] != tc.wantTitle {
				t.Errorf("extra_info %v, want node_id %v class_type %v node_title %v", e.ExtraInfo, tc.wantNodeInErr, tc.wantClass, tc.wantTitle)
			}
		})
	}
}

func TestDecodePromptFields(t *testing.T) {
	body := `{"prompt": ` + txt2img + `, "client_id": "c1", "prompt_id": "p-1", "front": true, "number": 3, "extra_data": {"extra_pnginfo": {}}, "unknown": 1}`
	req, perr := DecodePrompt([]byte(body), testEnv(t))
	if perr != nil {
		t.Fatal(perr)
	}
	if req.ClientID != "c1" || req.PromptID != "p-1" || !req.Front || req.Number == nil || *req.Number != 3 ||
		!slices.Equal(req.Outputs, []string{"9"}) || !slices.Equal(req.Models, []string{"checkpoints/v1-5.safetensors"}) {
		t.Fatalf("decoded %+v", req)
	}
	if _, perr := DecodePrompt([]byte(`{"prompt": `+txt2img+`, "prompt_id": "../x"}`), testEnv(t)); perr == nil || perr.Err.Type != "invalid_prompt" {
		t.Fatalf("bad prompt_id accepted: %v", perr)
	}
}

// TestDecodePromptAcceptsComfyUIValues checks graphs that ComfyUI's
// nodes.py accepts and kiln once refused: combo values its lists lacked
// (value_not_in_list), a negative batch_index (value_smaller_than_min), and
// links from SaveImage's and PreviewImage's IMAGE output (they return their
// images).
func TestDecodePromptAcceptsComfyUIValues(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"bislerp", `"20": {"class_type": "LatentUpscale", "inputs": {"samples": ["3", 0], "upscale_method": "bislerp", "width": 768, "height": 768, "crop": "disabled"}},
			"21": {"class_type": "SaveLatent", "inputs": {"samples": ["20", 0], "filename_prefix": "l"}}`},
		{"negative batch_index", `"20": {"class_type": "LatentFromBatch", "inputs": {"samples": ["3", 0], "batch_index": -1, "length": 1}},
			"21": {"class_type": "SaveLatent", "inputs": {"samples": ["20", 0], "filename_prefix": "l"}}`},
		{"new CLIP types", `"20": {"class_type": "CLIPLoader", "inputs": {"clip_name": "a.safetensors", "type": "flux2", "device": "cpu"}},
			"21": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "a.safetensors", "clip_name2": "b.safetensors", "type": "hunyuan_video_15"}},
			"22": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["23", 0], "conditioning_2": ["24", 0]}},
			"23": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["20", 0]}},
			"24": {"class_type": "CLIPTextEncode", "inputs": {"text": "y", "clip": ["21", 0]}},
			"25": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["22", 0]}},
			"26": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 4, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
				"model": ["4", 0], "positive": ["25", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
			"27": {"class_type": "SaveLatent", "inputs": {"samples": ["26", 0], "filename_prefix": "l"}}`},
		{"SaveImage output", `"20": {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}},
			"21": {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}},
			"22": {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": "again"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"prompt": ` + strings.TrimSuffix(strings.TrimSpace(txt2img), "}") + `, ` + tc.extra + `}}`
			if _, perr := DecodePrompt([]byte(body), testEnv(t)); perr != nil {
				b, _ := json.Marshal(perr)
				t.Fatalf("refused: %s", b)
			}
		})
	}
}

// TestDecodePromptFileNodes checks LoadImageOutput's image, which names a
// file by ComfyUI's annotation ("name.png [output]"; none means an input
// file), and DiffusersLoader's model_path, a model of the diffusers folder.
func TestDecodePromptFileNodes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		node       string // node 20, whose output a preview (through a VAEDecode for a loader) uses
		wantLookup string // the folder/name that validation looks up
		wantModels []string
		wantErr    string // node 20's error type
	}{
		{name: "output file", node: `{"class_type": "LoadImageOutput", "inputs": {"image": "ComfyUI_00001_.png [output]"}}`,
			wantLookup: "output/ComfyUI_00001_.png", wantModels: []string{"checkpoints/v1-5.safetensors"}},
		{name: "temp file in a subfolder", node: `{"class_type": "LoadImageOutput", "inputs": {"image": "sub/a.png [temp]"}}`,
			wantLookup: "temp/sub/a.png", wantModels: []string{"checkpoints/v1-5.safetensors"}},
		{name: "no annotation is an input file", node: `{"class_type": "LoadImageOutput", "inputs": {"image": "a.png"}}`,
			wantLookup: "input/a.png", wantModels: []string{"checkpoints/v1-5.safetensors"}},
		{name: "missing output file", node: `{"class_type": "LoadImageOutput", "inputs": {"image": "missing.png [output]"}}`,
			wantLookup: "output/missing.png", wantErr: "value_not_in_list"},
		{name: "diffusers model", node: `{"class_type": "DiffusersLoader", "inputs": {"model_path": "sdxl-base"}}`,
			wantLookup: "diffusers/sdxl-base", wantModels: []string{"checkpoints/v1-5.safetensors", "diffusers/sdxl-base"}},
		{name: "diffusers model not in the catalog", node: `{"class_type": "DiffusersLoader", "inputs": {"model_path": "missing-sd"}}`,
			wantLookup: "diffusers/missing-sd", wantErr: "value_not_in_list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := testEnv(t)
			var lookups []string
			env.ModelExists = func(folder, name string) bool {
				lookups = append(lookups, folder+"/"+name)
				return !strings.HasPrefix(name, "missing")
			}
			// Node 20's first output feeds a PreviewImage, so that it is
			// validated and run.
			var g map[string]json.RawMessage
			if err := json.Unmarshal([]byte(txt2img), &g); err != nil {
				t.Fatal(err)
			}
			g["20"] = json.RawMessage(tc.node)
			g["21"] = json.RawMessage(`{"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}`)
			if strings.Contains(tc.node, "DiffusersLoader") {
				g["21"] = json.RawMessage(`{"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["20", 2]}}`)
				g["22"] = json.RawMessage(`{"class_type": "PreviewImage", "inputs": {"images": ["21", 0]}}`)
			}
			prompt, _ := json.Marshal(g)
			req, perr := DecodePrompt([]byte(`{"prompt": `+string(prompt)+`}`), env)
			if !slices.Contains(lookups, tc.wantLookup) {
				t.Errorf("looked up %v, want %s among them", lookups, tc.wantLookup)
			}
			if tc.wantErr != "" {
				if perr == nil || perr.NodeErrors["20"] == nil || perr.NodeErrors["20"].Errors[0].Type != tc.wantErr {
					t.Fatalf("error = %+v, want %s on node 20", perr, tc.wantErr)
				}
				return
			}
			if perr != nil {
				t.Fatalf("refused: %+v", perr)
			}
			if !slices.Equal(req.Models, tc.wantModels) {
				t.Errorf("models %v, want %v", req.Models, tc.wantModels)
			}
		})
	}
}

func TestAnnotatedFile(t *testing.T) {
	for _, tc := range []struct{ in, typ, name string }{
		{"a.png [output]", "output", "a.png"},
		{"a.png [input]", "input", "a.png"},
		{"sub/a.png [temp]", "temp", "sub/a.png"},
		{"a.png", "input", "a.png"},
		{"[output]", "output", ""},
		{"a.png [outputs]", "input", "a.png [outputs]"},
	} {
		if typ, name := annotatedFile(tc.in); typ != tc.typ || name != tc.name {
			t.Errorf("annotatedFile(%q) = %q, %q; want %q, %q", tc.in, typ, name, tc.typ, tc.name)
		}
	}
}

// TestWorkflowsGolden checks every shared workflow: accepted or refused as
// the issue says (ImageRequestParameter is not a core node), with the
// models it needs.
func TestWorkflowsGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "examples", "workflows", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no workflows: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			wf, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			req, perr := DecodePrompt([]byte(`{"prompt": `+string(wf)+`}`), testEnv(t))
			got := map[string]any{"accepted": perr == nil}
			if perr != nil {
				got["error"] = perr.Err.Type
			} else {
				got["models"] = req.Models
				got["outputs"] = req.Outputs
			}
			b, _ := json.MarshalIndent(got, "", "  ")
			b = append(b, '\n')
			golden := filepath.Join("testdata", "golden", strings.TrimSuffix(filepath.Base(f), ".json")+".golden.json")
			if *updateGolden {
				_ = os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./internal/api/comfy -run TestWorkflowsGolden -update)", err)
			}
			if string(b) != string(want) {
				t.Errorf("got\n%s\nwant\n%s", b, want)
			}
			usesIRP := strings.Contains(string(wf), `"ImageRequestParameter"`)
			if usesIRP != (perr != nil) || (perr != nil && perr.Err.Type != "missing_node_type") {
				t.Errorf("uses ImageRequestParameter: %v, refusal: %v", usesIRP, perr)
			}
		})
	}
}

// FuzzDecodePrompt checks that no body crashes the /prompt decoder, that
// every refusal has ComfyUI's shape, and that accepted prompts name only
// safe model ids.
func FuzzDecodePrompt(f *testing.F) {
	f.Add([]byte(`{"prompt": ` + txt2img + `, "client_id": "x"}`))
	f.Add([]byte(`{"prompt": {}}`))
	f.Add([]byte(`{"prompt": {"1": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}}`))
	f.Add([]byte(`{"prompt": null, "front": "yes", "number": "1"}`))
	f.Add([]byte("{\"prompt\": {\"\xff\": 1}}"))
	env := testEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, perr := DecodePrompt(body, env)
		if perr != nil {
			if perr.Status < 400 || perr.Status > 499 || perr.Err.Type == "" || perr.Err.Message == "" || perr.NodeErrors == nil {
				t.Fatalf("bad refusal %+v", perr)
			}
			if _, err := json.Marshal(perr); err != nil {
				t.Fatalf("refusal does not encode: %v", err)
			}
			return
		}
		for _, m := range req.Models {
			if err := catalog.CleanID(m); err != nil {
				t.Fatalf("accepted unsafe model id %q: %v", m, err)
			}
		}
	})
}
