package dispatch

import (
	"os"
	"reflect"
	"testing"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// fluxCatalog holds the Flux dev workflow's models at their real sizes.
func fluxCatalog(id string) (catalog.Entry, error) {
	e, ok := map[string]catalog.Entry{
		"text_encoders/t5xxl_fp8_e4m3fn.safetensors": {VRAMBytes: 4890000000, DType: "F8_E4M3"},
		"text_encoders/clip_l.safetensors":           {VRAMBytes: 246000000, DType: "F16"},
		"diffusion_models/flux1-dev.safetensors":     {VRAMBytes: 23800000000, DType: "BF16"},
		"vae/ae.safetensors":                         {VRAMBytes: 335000000, DType: "F32"},
	}[id]
	if !ok {
		return catalog.Entry{}, catalog.ErrNotFound
	}
	e.ID = id
	return e, nil
}

func TestPlanGraphFlux(t *testing.T) {
	data, err := os.ReadFile("../../examples/workflows/worker-comfyui__workflow_flux1_dev.api.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := workflow.Parse(data, workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c := cost.Default()
	p := PlanGraph(g, fluxCatalog, c)
	if len(p.Stages) != 3 {
		t.Fatalf("%d stages; want text encoders, diffusion model, VAE", len(p.Stages))
	}
	act := uint64(c.ActivationBytes("flux", 1024, 1024, 1))
	diffusion := p.Stages[1]
	// UNETLoader casts the bf16 weights to fp8: half the file.
	if want := []uint64{11900000000}; !reflect.DeepEqual(diffusion.ModelBytes, want) || diffusion.WeightDTypes[0] != "fp8_e4m3fn" {
		t.Errorf("diffusion stage holds %v as %q; want %v as fp8_e4m3fn", diffusion.ModelBytes, diffusion.WeightDTypes, want)
	}
	if diffusion.ActivationBytes != act || p.Stages[0].ActivationBytes != 0 || p.Stages[2].ActivationBytes != act {
		t.Errorf("activations %d, %d, %d; want 0, %d, %d", p.Stages[0].ActivationBytes, diffusion.ActivationBytes,
			p.Stages[2].ActivationBytes, act, act)
	}
	if p.Peak() != 11900000000+act {
		t.Errorf("peak %d; want the diffusion stage's %d", p.Peak(), 11900000000+act)
	}
	// The whole set at once would not fit a 24 GiB card's 19.2 GiB usable
	// with its two workers' contexts; the largest stage does.
	room := uint64(24*gib*8/10) - 2*DefaultWorkerContextBytes
	if p.Whole() <= room || p.Peak() > room {
		t.Errorf("whole %.1f GiB, peak %.1f GiB, room %.1f GiB: want whole > room ≥ peak",
			float64(p.Whole())/gib, float64(p.Peak())/gib, float64(room)/gib)
	}
	rel, load := p.Step(1)
	if !reflect.DeepEqual(rel, []string{"text_encoders/t5xxl_fp8_e4m3fn.safetensors", "text_encoders/clip_l.safetensors"}) ||
		!reflect.DeepEqual(load, []string{"diffusion_models/flux1-dev.safetensors"}) {
		t.Errorf("Step(1) = release %v, load %v", rel, load)
	}
	rel, load = p.Step(2)
	if !reflect.DeepEqual(rel, []string{"text_encoders/t5xxl_fp8_e4m3fn.safetensors", "text_encoders/clip_l.safetensors",
		"diffusion_models/flux1-dev.safetensors"}) || !reflect.DeepEqual(load, []string{"vae/ae.safetensors"}) {
		t.Errorf("Step(2) = release %v, load %v", rel, load)
	}
}

func TestPlanStep(t *testing.T) {
	// A model two stages need stays held across them.
	p := Plan{Stages: []PlanStage{
		{Models: []string{"te", "ckpt"}, ModelBytes: []uint64{1, 10}},
		{Models: []string{"ckpt"}, ModelBytes: []uint64{10}, ActivationBytes: 5},
		{Models: []string{"ckpt", "vae"}, ModelBytes: []uint64{10, 2}, ActivationBytes: 3},
	}}
	for _, tc := range []struct {
		k             int
		release, load []string
	}{
		{0, nil, nil},
		{1, []string{"te"}, nil},
		{2, []string{"te"}, []string{"vae"}},
		{3, nil, nil},
	} {
		rel, load := p.Step(tc.k)
		if !reflect.DeepEqual(rel, tc.release) || !reflect.DeepEqual(load, tc.load) {
			t.Errorf("Step(%d) = %v, %v; want %v, %v", tc.k, rel, load, tc.release, tc.load)
		}
	}
	if p.Peak() != 15 || p.Whole() != 1+10+2+5 {
		t.Errorf("peak %d whole %d; want 15, 18", p.Peak(), p.Whole())
	}
}

func TestPlanByRole(t *testing.T) {
	p := PlanByRole([]string{"vae/ae", "text_encoders/t5", "diffusion_models/flux", "loras/x"},
		[]string{"vae", "text_encoder", "flux", "lora"}, []uint64{1, 5, 12, 1}, 4)
	var got [][]string
	for _, s := range p.Stages {
		got = append(got, s.Models)
	}
	want := [][]string{{"text_encoders/t5"}, {"diffusion_models/flux", "loras/x"}, {"vae/ae"}}
	if !reflect.DeepEqual(got, want) || p.Peak() != 12+1+4 {
		t.Fatalf("stages %v peak %d; want %v peak 17", got, p.Peak(), want)
	}
}

// TestLoadWaves fails when a patch could reach a worker before the model
// it patches (the order), or when independent parts wait for each other
// (the parallelism).
func TestLoadWaves(t *testing.T) {
	ckpt := catalog.Entry{ID: "checkpoints/sdxl.safetensors", Component: "checkpoint", Backend: "models"}
	unet := catalog.Entry{ID: "diffusion_models/flux.safetensors", Component: "unet", Backend: "models"}
	lora := catalog.Entry{ID: "loras/a.safetensors", Component: "lora", DependsOn: []string{"checkpoint"}, Backend: "models"}
	cnet := catalog.Entry{ID: "controlnet/c.safetensors", Component: "controlnet", DependsOn: []string{"checkpoint"}, Backend: "models"}
	vae := catalog.Entry{ID: "vae/ae.safetensors", Component: "vae", Backend: "models"}
	te := catalog.Entry{ID: "text_encoders/t5.safetensors", Component: "text_encoder", Backend: "models"}
	// A directory catalog has no loader metadata: the folder says it.
	dirLoRA := catalog.Entry{ID: "loras/b.safetensors"}
	dirCkpt := catalog.Entry{ID: "checkpoints/v15.safetensors"}
	for _, tc := range []struct {
		name    string
		entries []catalog.Entry
		want    [][]int
	}{
		{"patches after their base, the rest together", []catalog.Entry{lora, ckpt, vae, cnet, te}, [][]int{{1, 2, 4}, {0, 3}}},
		{"a diffusion model is a base", []catalog.Entry{lora, unet, te}, [][]int{{1, 2}, {0}}},
		{"independent parts in one wave", []catalog.Entry{te, vae, ckpt}, [][]int{{0, 1, 2}}},
		{"a patch with no base waits for nothing", []catalog.Entry{lora, vae}, [][]int{{0, 1}}},
		{"directory catalog", []catalog.Entry{dirLoRA, dirCkpt}, [][]int{{1}, {0}}},
		{"none", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := LoadWaves(tc.entries); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("LoadWaves = %v; want %v", got, tc.want)
			}
		})
	}
}
