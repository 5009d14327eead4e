package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

// refused lists example workflows that Parse must refuse, with the error type.
var refused = map[string]string{}

func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/workflows/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example workflows: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".api.json")
		name = strings.TrimSuffix(name, ".json")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			g, err := Parse(data, Limits{})
			if want, ok := refused[name]; ok {
				var werr *Error
				if !errors.As(err, &werr) || werr.Type != want {
					t.Fatalf("Parse = %v; want refusal %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(g.OutputNodes()) == 0 {
				t.Error("no output nodes")
			}
			if len(g.Params()) == 0 && len(g.Models()) == 0 {
				t.Error("neither models nor samplers found")
			}
			checkTopo(t, g)
			got, err := json.MarshalIndent(struct {
				Models []ModelRef      `json:"models"`
				Params []SamplerParams `json:"params"`
			}{g.Models(), g.Params()}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", "golden", name+".models.json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (run go test -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("models differ from %s:\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func checkTopo(t *testing.T, g *Graph) {
	t.Helper()
	pos := map[string]int{}
	for i, n := range g.Nodes() {
		pos[n.ID] = i
	}
	for _, n := range g.Nodes() {
		for name := range n.Inputs {
			if l, ok := n.Link(name); ok && pos[l.NodeID] >= pos[n.ID] {
				t.Errorf("node %s comes before its input %s", l.NodeID, n.ID)
			}
		}
	}
}

const (
	ckpt   = `"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":"v1-5-pruned-emaonly.safetensors"}}`
	latent = `"5":{"class_type":"EmptyLatentImage","inputs":{"width":512,"height":512,"batch_size":1}}`
	save   = `"9":{"class_type":"SaveImage","inputs":{"images":["3",0]}}`
)

func sampler(steps string) string {
	return `"3":{"class_type":"KSampler","inputs":{"steps":` + steps + `,"model":["4",0],"latent_image":["5",0]}}`
}

func graph(nodes ...string) string { return "{" + strings.Join(nodes, ",") + "}" }

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		lim            Limits
	}{
		{name: "not json", in: `{"1":`, want: ErrInvalidPrompt},
		{name: "array", in: `[1,2]`, want: ErrInvalidPrompt},
		{name: "empty", in: `{}`, want: ErrInvalidPrompt},
		{name: "trailing", in: graph(ckpt, latent, sampler("20"), save) + `{}`, want: ErrInvalidPrompt},
		{name: "node not object", in: `{"1":3}`, want: ErrInvalidPrompt},
		{name: "no class_type", in: `{"1":{"inputs":{}}}`, want: ErrInvalidPrompt},
		{name: "class_type number", in: `{"1":{"class_type":3,"inputs":{}}}`, want: ErrInvalidPrompt},
		{name: "inputs array", in: `{"1":{"class_type":"SaveImage","inputs":[]}}`, want: ErrInvalidPrompt},
		{name: "no inputs", in: `{"1":{"class_type":"SaveImage"}}`, want: ErrInvalidPrompt},
		{name: "invalid utf8", in: "{\"1\":{\"class_type\":\"Save\xffImage\",\"inputs\":{}}}", want: ErrInvalidPrompt},
		{name: "no outputs", in: graph(ckpt, latent, sampler("20")), want: ErrNoOutputs},
		{name: "dangling link", in: graph(ckpt, sampler("20"), save), want: ErrInvalidLink},
		{name: "link id number", in: `{"9":{"class_type":"SaveImage","inputs":{"images":[3,0]}}}`, want: ErrInvalidLink},
		{name: "link negative", in: graph(`"9":{"class_type":"SaveImage","inputs":{"images":["9x",-1]}}`, `"9x":{"class_type":"X","inputs":{}}`), want: ErrInvalidLink},
		{name: "link fraction", in: graph(`"9":{"class_type":"SaveImage","inputs":{"images":["9x",0.5]}}`, `"9x":{"class_type":"X","inputs":{}}`), want: ErrInvalidLink},
		{name: "link huge", in: graph(`"9":{"class_type":"SaveImage","inputs":{"images":["9x",1e300]}}`, `"9x":{"class_type":"X","inputs":{}}`), want: ErrInvalidLink},
		{name: "link beyond float", in: graph(`"9":{"class_type":"SaveImage","inputs":{"images":["9x",1e999]}}`, `"9x":{"class_type":"X","inputs":{}}`), want: ErrInvalidLink},
		{name: "self link", in: `{"9":{"class_type":"SaveImage","inputs":{"images":["9",0]}}}`, want: ErrCycle},
		{name: "two cycle", in: `{"1":{"class_type":"A","inputs":{"x":["2",0]}},"2":{"class_type":"B","inputs":{"x":["1",0]}},"9":{"class_type":"SaveImage","inputs":{"images":["2",0]}}}`, want: ErrCycle},
		{name: "too many steps", in: graph(ckpt, latent, sampler("151"), save), want: ErrLimitExceeded},
		{name: "steps beyond int64", in: graph(ckpt, latent, sampler("99999999999999999999999"), save), want: ErrLimitExceeded},
		{name: "steps fraction", in: graph(ckpt, latent, sampler("20.5"), save), want: ErrInvalidInput},
		{name: "steps string", in: graph(ckpt, latent, sampler(`"20"`), save), want: ErrInvalidInput},
		{name: "steps negative", in: graph(ckpt, latent, sampler("-1"), save), want: ErrInvalidInput},
		{name: "custom limit", in: graph(ckpt, latent, sampler("20"), save), lim: Limits{MaxSteps: 10}, want: ErrLimitExceeded},
		{name: "too wide", in: graph(ckpt, `"5":{"class_type":"EmptyLatentImage","inputs":{"width":8192,"height":512,"batch_size":1}}`, sampler("20"), save), want: ErrLimitExceeded},
		{name: "zero height", in: graph(ckpt, `"5":{"class_type":"EmptyLatentImage","inputs":{"width":512,"height":0,"batch_size":1}}`, sampler("20"), save), want: ErrInvalidInput},
		{name: "big batch", in: graph(ckpt, `"5":{"class_type":"EmptyLatentImage","inputs":{"width":512,"height":512,"batch_size":17}}`, sampler("20"), save), want: ErrLimitExceeded},
		{name: "linked steps over limit", in: graph(ckpt, latent, sampler(`["20",0]`), `"20":{"class_type":"PrimitiveInt","inputs":{"value":1000}}`, save), want: ErrLimitExceeded},
		{name: "too many nodes", in: graph(ckpt, latent, sampler("20"), save), lim: Limits{MaxNodes: 3}, want: ErrLimitExceeded},
		{name: "missing model name", in: graph(`"4":{"class_type":"CheckpointLoaderSimple","inputs":{}}`, latent, sampler("20"), save), want: ErrMissingModelName},
		{name: "empty model name", in: graph(`"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":""}}`, latent, sampler("20"), save), want: ErrMissingModelName},
		{name: "model name number", in: graph(`"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":7}}`, latent, sampler("20"), save), want: ErrMissingModelName},
		{name: "model name computed", in: graph(`"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":["8",0]}}`, `"8":{"class_type":"StringConcatenate","inputs":{"string_a":"a","string_b":"b"}}`, latent, sampler("20"), save), want: ErrMissingModelName},
		{name: "dual clip missing second", in: graph(`"4":{"class_type":"DualCLIPLoader","inputs":{"clip_name1":"clip_l.safetensors"}}`, `"9":{"class_type":"SaveImage","inputs":{"images":["4",0]}}`), want: ErrMissingModelName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse([]byte(tc.in), tc.lim)
			var werr *Error
			if !errors.As(err, &werr) {
				t.Fatalf("Parse = %v, %v; want *Error %s", g, err, tc.want)
			}
			if werr.Type != tc.want {
				t.Errorf("Parse error type %s (%v); want %s", werr.Type, werr, tc.want)
			}
			if werr.Message == "" || strings.ToLower(werr.Message[:1]) != werr.Message[:1] {
				t.Errorf("message %q: want a lowercase sentence", werr.Message)
			}
		})
	}
}

func TestModelNames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		class   string
		input   string
		value   string
		wantID  string
		wantErr string
	}{
		{name: "subdir", class: "CheckpointLoaderSimple", input: "ckpt_name", value: "sdxl/foo.safetensors", wantID: "checkpoints/sdxl/foo.safetensors"},
		{name: "unet", class: "UNETLoader", input: "unet_name", value: "flux1-dev.safetensors", wantID: "diffusion_models/flux1-dev.safetensors"},
		{name: "legacy unet", class: "UnetLoaderGGUF", input: "unet_name", value: "flux.gguf", wantID: "diffusion_models/flux.gguf"},
		{name: "legacy clip", class: "CLIPLoaderGGUF", input: "clip_name", value: "t5.gguf", wantID: "text_encoders/t5.gguf"},
		{name: "lora", class: "LoraLoaderModelOnly", input: "lora_name", value: "a.safetensors", wantID: "loras/a.safetensors"},
		{name: "style", class: "StyleModelLoader", input: "style_model_name", value: "s.safetensors", wantID: "style_models/s.safetensors"},
		{name: "photomaker", class: "PhotoMakerLoader", input: "photomaker_model_name", value: "p.bin", wantID: "photomaker/p.bin"},
		{name: "diffusers", class: "DiffusersLoader", input: "model_path", value: "sdxl/stable-diffusion-xl-base-1.0", wantID: "diffusers/sdxl/stable-diffusion-xl-base-1.0"},
		{name: "dotdot", class: "CheckpointLoaderSimple", input: "ckpt_name", value: "../../etc/passwd", wantErr: ErrInvalidModelName},
		{name: "dotdot inside", class: "LoraLoader", input: "lora_name", value: "a/../../b", wantErr: ErrInvalidModelName},
		{name: "absolute", class: "VAELoader", input: "vae_name", value: "/etc/passwd", wantErr: ErrInvalidModelName},
		{name: "backslash", class: "VAELoader", input: "vae_name", value: `..\x`, wantErr: ErrInvalidModelName},
		{name: "windows subdir", class: "VAELoader", input: "vae_name", value: `sdxl\x.safetensors`, wantErr: ErrInvalidModelName},
		{name: "nul", class: "VAELoader", input: "vae_name", value: "a\x00b", wantErr: ErrInvalidModelName},
		{name: "empty segment", class: "VAELoader", input: "vae_name", value: "a//b", wantErr: ErrInvalidModelName},
		{name: "trailing slash", class: "VAELoader", input: "vae_name", value: "a/", wantErr: ErrInvalidModelName},
		{name: "dot segment", class: "VAELoader", input: "vae_name", value: "./a", wantErr: ErrInvalidModelName},
		{name: "drive", class: "VAELoader", input: "vae_name", value: "C:x", wantErr: ErrInvalidModelName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]any{
				"1": map[string]any{"class_type": tc.class, "inputs": map[string]any{tc.input: tc.value}},
				"2": map[string]any{"class_type": "PreviewImage", "inputs": map[string]any{"images": []any{"1", 0.0}}},
			}
			g, err := FromMap(m, Limits{})
			if tc.wantErr != "" {
				var werr *Error
				if !errors.As(err, &werr) || werr.Type != tc.wantErr {
					t.Fatalf("FromMap = %v; want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ms := g.Models(); len(ms) != 1 || ms[0].ID != tc.wantID || ms[0].NodeID != "1" {
				t.Errorf("Models = %+v; want %s", ms, tc.wantID)
			}
		})
	}
}

func TestLinkedModelName(t *testing.T) {
	in := graph(`"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":["8",0]}}`,
		`"8":{"class_type":"PrimitiveString","inputs":{"value":"sd_xl_base_1.0.safetensors"}}`,
		`"14":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":"sd_xl_base_1.0.safetensors"}}`,
		latent, sampler("20"), save)
	g, err := Parse([]byte(in), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ms := g.Models()
	if len(ms) != 1 || ms[0].ID != "checkpoints/sd_xl_base_1.0.safetensors" || ms[0].Family != FamilySDXL || ms[0].NodeID != "14" {
		t.Errorf("Models = %+v", ms)
	}
}

func TestGuessFamily(t *testing.T) {
	for _, tc := range []struct{ folder, name, want string }{
		{"checkpoints", "sd_xl_base_1.0.safetensors", FamilySDXL},
		{"checkpoints", "SDXL/dreamshaperXL.safetensors", FamilySDXL},
		{"checkpoints", "sd3_medium_incl_clips.safetensors", FamilySD3},
		{"checkpoints", "flux1-dev-fp8.safetensors", FamilyFlux},
		{"checkpoints", "v1-5-pruned-emaonly.ckpt", FamilySD15},
		{"checkpoints", "dreamshaper_8.safetensors", FamilySD15},
		{"diffusion_models", "flux1-schnell.safetensors", FamilyFlux},
		{"unet", "flux1-dev.safetensors", FamilyFlux},
		{"loras", "x.safetensors", FamilyLoRA},
		{"vae", "ae.safetensors", FamilyVAE},
		{"controlnet", "c.safetensors", FamilyControlNet},
		{"upscale_models", "RealESRGAN_x4plus.pth", FamilyUpscaler},
		{"clip", "t5xxl_fp16.safetensors", FamilyTextEncoder},
		{"clip_vision", "v.safetensors", FamilyCLIPVision},
	} {
		t.Run(tc.folder+"/"+tc.name, func(t *testing.T) {
			if got := GuessFamily(tc.folder, tc.name); got != tc.want {
				t.Errorf("GuessFamily = %s; want %s", got, tc.want)
			}
		})
	}
}

func TestParams(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want SamplerParams
	}{
		{name: "ksampler", in: graph(ckpt, latent, sampler("30"), save),
			want: SamplerParams{NodeID: "3", ClassType: "KSampler", Steps: 30, Width: 512, Height: 512, BatchSize: 1, Denoise: 1,
				Model: "checkpoints/v1-5-pruned-emaonly.safetensors", Family: FamilySD15}},
		{name: "img2img defaults", in: graph(ckpt,
			`"5":{"class_type":"VAEEncode","inputs":{"pixels":["6",0],"vae":["4",2]}}`,
			`"6":{"class_type":"LoadImage","inputs":{"image":"x.png"}}`,
			`"3":{"class_type":"KSampler","inputs":{"model":["4",0],"latent_image":["5",0],"denoise":0.5}}`, save),
			want: SamplerParams{NodeID: "3", ClassType: "KSampler", Steps: 20, Width: 512, Height: 512, BatchSize: 1, Denoise: 0.5,
				Model: "checkpoints/v1-5-pruned-emaonly.safetensors", Family: FamilySD15}},
		{name: "through lora and upscale", in: graph(ckpt,
			`"5":{"class_type":"EmptyLatentImage","inputs":{"width":768,"height":640,"batch_size":4}}`,
			`"6":{"class_type":"LatentUpscaleBy","inputs":{"samples":["5",0],"scale_by":1.5}}`,
			`"7":{"class_type":"LoraLoader","inputs":{"lora_name":"l.safetensors","model":["4",0],"clip":["4",1]}}`,
			`"3":{"class_type":"KSampler","inputs":{"steps":12,"model":["7",0],"latent_image":["6",0]}}`, save),
			want: SamplerParams{NodeID: "3", ClassType: "KSampler", Steps: 12, Width: 768, Height: 640, BatchSize: 4, Denoise: 1,
				Model: "checkpoints/v1-5-pruned-emaonly.safetensors", Family: FamilySD15}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse([]byte(tc.in), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			ps := g.Params()
			if len(ps) != 1 || ps[0] != tc.want {
				t.Errorf("Params = %+v; want %+v", ps, tc.want)
			}
		})
	}
}

// chain builds n nodes, each linked to the one before, ending in SaveImage.
func chain(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"0":{"class_type":"LoadImage","inputs":{"image":"a.png"}}`)
	for i := 1; i < n; i++ {
		class := "ImageInvert"
		if i == n-1 {
			class = "SaveImage"
		}
		fmt.Fprintf(&b, `,"%d":{"class_type":%q,"inputs":{"images":["%d",0]}}`, i, class, i-1)
	}
	b.WriteString("}")
	return []byte(b.String())
}

func TestDeepChain(t *testing.T) {
	data := chain(100_000)
	_, err := Parse(data, Limits{})
	var werr *Error
	if !errors.As(err, &werr) || werr.Type != ErrLimitExceeded {
		t.Fatalf("100k chain: %v; want limit_exceeded", err)
	}
	// With the limit raised, the sort must cope without recursion.
	g, err := Parse(data, Limits{MaxNodes: 200_000})
	if err != nil {
		t.Fatalf("100k chain, raised limit: %v", err)
	}
	if ns := g.Nodes(); len(ns) != 100_000 || ns[0].ID != "0" || ns[len(ns)-1].ID != "99999" {
		t.Errorf("topological order wrong")
	}
}

func TestDeepJSON(t *testing.T) {
	data := []byte(`{"1":{"class_type":"SaveImage","inputs":{"x":` + strings.Repeat("[", 1_000_000) + strings.Repeat("]", 1_000_000) + `}}}`)
	if _, err := Parse(data, Limits{}); err == nil {
		t.Fatal("deeply nested json accepted")
	}
}

func TestFromMapFloatLinks(t *testing.T) {
	var body struct {
		Workflow map[string]any `json:"workflow"`
	}
	if err := json.Unmarshal([]byte(`{"workflow":`+graph(ckpt, latent, sampler("20"), save)+`}`), &body); err != nil {
		t.Fatal(err)
	}
	g, err := FromMap(body.Workflow, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if ps := g.Params(); len(ps) != 1 || ps[0].Steps != 20 {
		t.Errorf("Params = %+v", ps)
	}
	out, err := json.Marshal(g)
	if err != nil || !bytes.Contains(out, []byte(`"KSampler"`)) {
		t.Errorf("MarshalJSON = %s, %v", out, err)
	}
}

func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      Limits
		wantErr string
	}{
		{name: "defaults", in: Limits{}},
		{name: "negative steps", in: Limits{MaxSteps: -1}, wantErr: "limits.max_steps: must be ≥ 1"},
		{name: "negative nodes", in: Limits{MaxNodes: -5}, wantErr: "limits.max_nodes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.in.WithDefaults()
			err := l.Validate()
			if tc.wantErr == "" {
				if err != nil || l != (Limits{500, 150, 4096, 16}) {
					t.Errorf("WithDefaults = %+v, Validate = %v", l, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate = %v; want %q", err, tc.wantErr)
			}
		})
	}
	if err := (Limits{}).Validate(); err == nil {
		t.Error("zero Limits validated without defaults")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(graph(ckpt, latent, sampler("20"), save)))
	f.Add([]byte(`{"1":{"class_type":"A","inputs":{"x":["2",0]}},"2":{"class_type":"B","inputs":{"x":["1",0]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data, Limits{})
		if err != nil {
			return
		}
		for _, m := range g.Models() {
			folder, name, err := SplitModelID(m.ID)
			if err != nil || folder != m.Folder || name != m.Name {
				t.Fatalf("unsafe model id %q: %v", m.ID, err)
			}
			if filepath.IsAbs(m.ID) || strings.Contains(m.ID, "..") || filepath.Clean(m.ID) != m.ID {
				t.Fatalf("unsafe model id %q", m.ID)
			}
		}
		if len(g.Nodes()) != g.Len() || len(g.OutputNodes()) == 0 {
			t.Fatal("inconsistent graph")
		}
		g.Params()
	})
}

func TestFromMapIntegerTypes(t *testing.T) {
	for _, idx := range []any{int8(0), uint8(0), int16(0), uint16(0), int32(0), uint32(0), int64(0), uint64(0), 0, uint(0), float32(0)} {
		t.Run(fmt.Sprintf("%T", idx), func(t *testing.T) {
			m := map[string]any{
				"1": map[string]any{"class_type": "LoadImage", "inputs": map[string]any{"image": "a.png"}},
				"2": map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"images": []any{"1", idx}}},
			}
			if _, err := FromMap(m, Limits{}); err != nil {
				t.Errorf("FromMap: %v", err)
			}
		})
	}
}
