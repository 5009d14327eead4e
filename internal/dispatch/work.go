package dispatch

import (
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// DefaultJobSteps is the sampling assumed for a job whose graph names no
// sampler: this many steps at the family's reference size (512² for
// SD1.5, 1024² for the others).
const DefaultJobSteps = 20

// JobWork is the compute a job asks for in the cost model's terms, from
// the families of the models it needs (catalog order) and the samplers of
// its graph (workflow.Graph.Params; none when the graph is unknown). known
// says which families the cost model prices; the first of them is the
// job's base family. The live dispatcher and the simulator both estimate jobs with it,
// so that the policies see the same estimates in both. It lives here, not
// in internal/workflow, so that graph parsing imports nothing of the
// kernel (a leaf): the cost model is the estimator's business.
func JobWork(families []string, samplers []workflow.SamplerParams, known func(family string) bool) cost.Work {
	base := ""
	var loras, upscalers int
	for _, f := range families {
		switch f {
		case workflow.FamilyLoRA:
			loras++
		case workflow.FamilyUpscaler:
			upscalers++
		}
		if base == "" && known(f) {
			base = f
		}
	}
	size := 1024
	if base == workflow.FamilySD15 {
		size = 512
	}
	var w cost.Work
	switch {
	case base == "" && upscalers > 0 && len(samplers) == 0:
		// An upscale-only job.
	case len(samplers) == 0:
		w = cost.TextToImage(base, DefaultJobSteps, size, size, 1)
	default:
		w = cost.Work{Family: base}
		for _, p := range samplers {
			fam := base
			if p.Model != "" && p.Family != "" {
				fam = p.Family
			}
			w.TextEncodes += 2
			w.Samplers = append(w.Samplers, cost.Sample{Family: fam, Steps: p.Steps, Width: p.Width, Height: p.Height, Batch: p.BatchSize})
			w.Decodes = append(w.Decodes, cost.Image{Family: fam, Width: p.Width, Height: p.Height, Batch: p.BatchSize})
			size = p.Width
		}
	}
	w.LoRAs = loras
	for range upscalers {
		w.Upscales = append(w.Upscales, cost.Image{Width: 4 * size, Height: 4 * size, Batch: 1})
	}
	return w
}
