package cost

import "time"

// Work is the compute a job asks for, in the cost model's terms. The sim
// worker and the simulator build it from a workflow graph; the cost package
// does not depend on the workflow package so that either can use the other.
type Work struct {
	// Family is the family of stages that leave theirs empty.
	Family string
	// TextEncodes counts prompts encoded (CLIPTextEncode nodes and kin).
	TextEncodes int
	// LoRAs counts LoRAs applied.
	LoRAs int
	// Samplers lists sampler runs, in order.
	Samplers []Sample
	// Decodes lists VAE decodes.
	Decodes []Image
	// Upscales lists upscale-model passes, by output size.
	Upscales []Image
}

// Sample is one sampler node's work.
type Sample struct {
	Family string
	Steps  int
	Width  int
	Height int
	Batch  int
}

// Image is a batch of images of one size.
type Image struct {
	Family string
	Width  int
	Height int
	Batch  int
}

func pick(family, dflt string) string {
	if family != "" {
		return family
	}
	return dflt
}

// JobEstimate is the compute time of w on dev (model loads not included:
// see LoadTime). It is the sum of the stages' times, each computed as by
// StepTime, DecodeTime, TextEncodeTime, LoRAApplyTime and UpscaleTime.
func (c Config) JobEstimate(w Work, dev Device) time.Duration {
	var d time.Duration
	d += time.Duration(max(w.TextEncodes, 0)) * c.TextEncodeTime(w.Family, dev)
	d += time.Duration(max(w.LoRAs, 0)) * c.LoRAApplyTime(w.Family, dev)
	for _, s := range w.Samplers {
		d += c.SampleTime(pick(s.Family, w.Family), s.Steps, s.Width, s.Height, s.Batch, dev)
	}
	for _, im := range w.Decodes {
		d += c.DecodeTime(pick(im.Family, w.Family), im.Width, im.Height, im.Batch, dev)
	}
	for _, im := range w.Upscales {
		d += c.UpscaleTime(im.Width, im.Height, im.Batch, dev)
	}
	return d
}

// TextToImage is the Work of the common single-sampler graph: two prompts
// (positive and negative), steps sampler steps and one decode.
func TextToImage(family string, steps, width, height, batch int) Work {
	return Work{
		Family:      family,
		TextEncodes: 2,
		Samplers:    []Sample{{Steps: steps, Width: width, Height: height, Batch: batch}},
		Decodes:     []Image{{Width: width, Height: height, Batch: batch}},
	}
}
