package dispatch

import (
	"reflect"
	"testing"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

func TestJobWork(t *testing.T) {
	known := func(f string) bool { return f == workflow.FamilySD15 || f == "sdxl" || f == "flux" }
	for _, tc := range []struct {
		name     string
		families []string
		samplers []workflow.SamplerParams
		want     cost.Work
	}{
		{"no graph: the base family's default at its reference size", []string{workflow.FamilyLoRA, workflow.FamilySD15}, nil,
			func() cost.Work {
				w := cost.TextToImage(workflow.FamilySD15, DefaultJobSteps, 512, 512, 1)
				w.LoRAs = 1
				return w
			}()},
		{"upscale only", []string{workflow.FamilyUpscaler}, nil,
			cost.Work{Upscales: []cost.Image{{Width: 4096, Height: 4096, Batch: 1}}}},
		{"a sampler on its own model's family, then an upscale of its output", []string{"sdxl", workflow.FamilyUpscaler},
			[]workflow.SamplerParams{{Steps: 8, Width: 768, Height: 512, BatchSize: 2, Model: "checkpoints/f.safetensors", Family: "flux"}},
			cost.Work{Family: "sdxl", TextEncodes: 2,
				Samplers: []cost.Sample{{Family: "flux", Steps: 8, Width: 768, Height: 512, Batch: 2}},
				Decodes:  []cost.Image{{Family: "flux", Width: 768, Height: 512, Batch: 2}},
				Upscales: []cost.Image{{Width: 3072, Height: 3072, Batch: 1}}}},
		{"a sampler not traced to a loader runs on the base family", []string{"sdxl"},
			[]workflow.SamplerParams{{Steps: 30, Width: 1024, Height: 1024, BatchSize: 1, Family: workflow.FamilySD15}},
			cost.Work{Family: "sdxl", TextEncodes: 2,
				Samplers: []cost.Sample{{Family: "sdxl", Steps: 30, Width: 1024, Height: 1024, Batch: 1}},
				Decodes:  []cost.Image{{Family: "sdxl", Width: 1024, Height: 1024, Batch: 1}}}},
	} {
		if got := JobWork(tc.families, tc.samplers, known); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}
