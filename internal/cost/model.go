package cost

import (
	"math"
	"time"
)

// Device is what the cost model needs to know about a GPU.
type Device struct {
	// H2DBytesPerS is the pinned host→device bandwidth; zero means the
	// config's H2DBytesPerS.
	H2DBytesPerS float64
	// ComputeFactor is the device's compute speed relative to the reference
	// GPU (A100-80G = 1; an H100 is about 2.2 for Flux by the BFX rows).
	// Zero means 1.
	ComputeFactor float64
}

func (d Device) compute() float64 {
	if d.ComputeFactor > 0 {
		return d.ComputeFactor
	}
	return 1
}

// aliases maps normalised family names that model files and catalogs use to
// the families of the default table.
var aliases = map[string]string{
	"sd1":          FamilySD15,
	"sd1x":         FamilySD15,
	"sdv1":         FamilySD15,
	"sd14":         FamilySD15,
	"sd2":          FamilySD15, // same UNet size class as SD1.x
	"sd21":         FamilySD15,
	"sdxlbase":     FamilySDXL,
	"sdxlrefiner":  FamilySDXL,
	"sd3medium":    FamilySD3,
	"sd35":         FamilySD3,
	"flux1":        FamilyFlux,
	"fluxdev":      FamilyFlux,
	"flux1dev":     FamilyFlux,
	"fluxschnell":  FamilyFlux, // same 12B architecture as dev (COSTS.md ⚠ note)
	"flux1schnell": FamilyFlux,
}

// Lookup returns the costs of a family and whether the family (or one of its
// aliases) is in the table; when it is not, it returns the fallback family's
// costs and false. Names are matched case-insensitively, ignoring "-", "_",
// "." and spaces ("SD1.5" is "sd15").
func (c Config) Lookup(family string) (Family, bool) {
	n := normalize(family)
	if f, ok := c.Families[n]; ok {
		return f, true
	}
	if a, ok := aliases[n]; ok {
		if f, ok := c.Families[a]; ok {
			return f, true
		}
	}
	if f, ok := c.Families[normalize(c.FallbackFamily)]; ok {
		return f, false
	}
	// Only reachable with a config that skipped WithDefaults.
	f, _ := Default().Families[FamilySDXL]
	return f, false
}

// seconds turns model seconds into a charged duration: scaled by TimeScale
// and, for compute, divided by the device's compute factor.
func (c Config) seconds(s float64) time.Duration {
	scale := c.TimeScale
	if scale <= 0 {
		scale = 1
	}
	d := s * scale * float64(time.Second)
	if d <= 0 || math.IsNaN(d) {
		return 0
	}
	if d > math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(math.Round(d))
}

func (c Config) compute(s float64, dev Device) time.Duration {
	return c.seconds(s / dev.compute())
}

// pixelFactor is the cost of an image of w×h relative to the reference
// resolution of f: (pixels / ref pixels)^PixelExponent.
func (c Config) pixelFactor(f Family, w, h int) float64 {
	ref := float64(f.RefWidth) * float64(f.RefHeight)
	px := float64(w) * float64(h)
	if ref <= 0 || px <= 0 {
		return 1
	}
	e := c.PixelExponent
	if e <= 0 {
		e = 1
	}
	return math.Pow(px/ref, e)
}

// BatchFactor is the time one sampler step takes at batch size batch,
// relative to batch size 1, for images of pixels pixels. It is batch^α where
// α = 1 − log8(gain at batch 8), with the gain interpolated between the two
// measured image sizes; it is 1 for batch ≤ 1 and never above batch.
func (c Config) BatchFactor(pixels, batch int) float64 {
	if batch <= 1 {
		return 1
	}
	b := c.Batch
	if b.SmallPixels <= 0 || b.LargePixels <= b.SmallPixels || b.SmallGain8 < 1 || b.LargeGain8 < 1 {
		b = Default().Batch
	}
	var gain float64
	switch {
	case pixels <= b.SmallPixels:
		gain = b.SmallGain8
	case pixels >= b.LargePixels:
		gain = b.LargeGain8
	default:
		t := math.Log(float64(pixels)/float64(b.SmallPixels)) / math.Log(float64(b.LargePixels)/float64(b.SmallPixels))
		gain = math.Exp((1-t)*math.Log(b.SmallGain8) + t*math.Log(b.LargeGain8))
	}
	alpha := 1 - math.Log(gain)/math.Log(8)
	return math.Pow(float64(batch), alpha)
}

// StepTime is one sampler step over a whole batch of width×height images.
func (c Config) StepTime(family string, width, height, batch int, dev Device) time.Duration {
	f, _ := c.Lookup(family)
	s := f.StepSeconds * c.pixelFactor(f, width, height) * c.BatchFactor(width*height, batch)
	return c.compute(s, dev)
}

// SampleTime is steps sampler steps; see StepTime.
func (c Config) SampleTime(family string, steps, width, height, batch int, dev Device) time.Duration {
	if steps <= 0 {
		return 0
	}
	return time.Duration(steps) * c.StepTime(family, width, height, batch, dev)
}

// DecodeTime is a VAE decode of batch images of width×height (linear in
// pixels: the VAE is convolutional).
func (c Config) DecodeTime(family string, width, height, batch int, dev Device) time.Duration {
	f, _ := c.Lookup(family)
	return c.compute(f.DecodeSecondsPerMP*megapixels(width, height)*float64(max(batch, 1)), dev)
}

// TextEncodeTime is one prompt through the family's text encoders.
func (c Config) TextEncodeTime(family string, dev Device) time.Duration {
	f, _ := c.Lookup(family)
	return c.compute(f.TextEncodeSeconds, dev)
}

// LoRAApplyTime is patching one LoRA into a model of the family.
func (c Config) LoRAApplyTime(family string, dev Device) time.Duration {
	f, _ := c.Lookup(family)
	return c.compute(f.LoRAApplySeconds, dev)
}

// UpscaleTime is an upscale model producing batch images of width×height
// (the output size).
func (c Config) UpscaleTime(width, height, batch int, dev Device) time.Duration {
	return c.compute(c.UpscaleSecondsPerMP*megapixels(width, height)*float64(max(batch, 1)), dev)
}

// DiskReadTime is reading nominalBytes from the model store into host RAM.
func (c Config) DiskReadTime(nominalBytes int64) time.Duration {
	return c.MoveTime(nominalBytes, c.DiskBytesPerS)
}

// MoveTime is moving nominalBytes at bytesPerS (a measured rate, say);
// 0 when either is unknown.
func (c Config) MoveTime(nominalBytes int64, bytesPerS float64) time.Duration {
	if nominalBytes <= 0 || bytesPerS <= 0 {
		return 0
	}
	return c.seconds(float64(nominalBytes) / bytesPerS)
}

// TransferTime is moving nominalBytes from host RAM onto the device at the
// pageable share of its host→device bandwidth, plus the per-load overhead.
func (c Config) TransferTime(nominalBytes int64, dev Device) time.Duration {
	bw := dev.H2DBytesPerS
	if bw <= 0 {
		bw = c.H2DBytesPerS
	}
	if c.PageableFactor > 0 {
		bw *= c.PageableFactor
	}
	s := c.LoadOverheadSeconds
	if nominalBytes > 0 && bw > 0 {
		s += float64(nominalBytes) / bw
	}
	return c.seconds(s)
}

// LoadTime is making a model of nominalBytes resident: disk → RAM → device
// (DiskReadTime + TransferTime). Loads are bandwidth-bound, so the device's
// compute factor does not apply; TimeScale does. family is accepted for
// future per-family load costs and does not change the result today.
func (c Config) LoadTime(family string, nominalBytes int64, dev Device) time.Duration {
	_ = family
	return c.DiskReadTime(nominalBytes) + c.TransferTime(nominalBytes, dev)
}

// VRAMBytes is the device memory a loaded model's weights hold: the file's
// nominal size (weights are stored in the dtype they run in, fp16/bf16/fp8).
// Run-time activations are separate: see ActivationBytes.
func VRAMBytes(family string, nominalBytes int64) int64 {
	_ = family
	return max(nominalBytes, 0)
}

// ActivationBytes is the device memory a run of batch images of width×height
// needs beyond the weights: linear in pixels and in batch size.
func (c Config) ActivationBytes(family string, width, height, batch int) int64 {
	f, _ := c.Lookup(family)
	return int64(math.Round(f.ActivationBytesPerMP * megapixels(width, height) * float64(max(batch, 1))))
}

func megapixels(w, h int) float64 {
	if w <= 0 || h <= 0 {
		return 0
	}
	return float64(w) * float64(h) / mp
}

// dtypeBytes are the element sizes of the dtypes weights are stored in
// (safetensors' names) or cast to on load (ComfyUI's weight_dtype names).
var dtypeBytes = map[string]float64{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1,
	"fp32": 4, "fp16": 2, "bf16": 2, "fp8_e4m3fn": 1, "fp8_e4m3fn_fast": 1, "fp8_e5m2": 1,
}

// WeightBytes is the device memory of weights that hold vramBytes in their
// stored dtype (storedDType, a safetensors dtype such as "BF16") once a
// loader casts them to weightDType (ComfyUI's UNETLoader weight_dtype,
// "fp8_e4m3fn" say): Flux-dev's 23.8 GB of bf16 weights hold 11.9 GB as
// fp8. An empty or unknown weightDType keeps the stored size; an unknown
// storedDType counts as 16-bit, what diffusion weights ship in.
func WeightBytes(vramBytes int64, storedDType, weightDType string) int64 {
	to, ok := dtypeBytes[weightDType]
	if !ok || vramBytes <= 0 {
		return max(vramBytes, 0)
	}
	from, ok := dtypeBytes[storedDType]
	if !ok {
		from = 2
	}
	return int64(math.Round(float64(vramBytes) * to / from))
}

// StreamTime is what running steps sampler steps costs beyond their
// compute when streamedBytes of the model's weights do not fit on the
// device and cross from pinned host memory every step (weight streaming,
// ComfyUI's lowvram): the transfer is PCIe-bound, at the device's pinned
// host→device bandwidth, charged in full on top of the step's compute.
// That is an upper bound: a worker that copies layer i+1 while layer i
// computes hides up to the compute time (ComfyUI's lowvram path copies
// mostly synchronously; no COSTS.md row measures either, ⚠ assumption).
func (c Config) StreamTime(streamedBytes int64, steps int, dev Device) time.Duration {
	if streamedBytes <= 0 || steps <= 0 {
		return 0
	}
	bw := dev.H2DBytesPerS
	if bw <= 0 {
		bw = c.H2DBytesPerS
	}
	if bw <= 0 {
		return 0
	}
	return c.seconds(float64(steps) * float64(streamedBytes) / bw)
}
