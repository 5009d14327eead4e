package cost

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/go-viper/mapstructure/v2"
)

// Config is the cost model that kiln-worker-sim (and later the simulator)
// charges time from. Every default comes from a row of shared/COSTS.md; the
// table in doc.go names the row for each one.
//
// A Config is a value: methods never change it. Zero fields mean "use the
// default" once WithDefaults has run, so a partial config (from koanf, or from
// the cost options of a worker's hello) only needs the keys it changes.
//
// All times are in seconds on the reference GPU (A100-80G) at TimeScale 1.
type Config struct {
	// TimeScale multiplies every charged duration: 1 is real time on the
	// reference GPU, 0.1 runs ten times faster (demos, tests).
	TimeScale float64 `koanf:"time_scale" json:"time_scale,omitempty"`

	// Families holds the per-family compute costs, keyed by family name in
	// lower case (sd15, sdxl, sd3, flux). Unknown families are looked up
	// through the aliases in Lookup, then fall back to FallbackFamily.
	Families map[string]Family `koanf:"families" json:"families,omitempty"`
	// FallbackFamily is the family whose costs stand in for a family the
	// table does not know.
	FallbackFamily string `koanf:"fallback_family" json:"fallback_family,omitempty"`

	// PixelExponent says how per-step and activation cost grow with the
	// image's pixel count: cost ∝ (pixels / reference pixels)^PixelExponent.
	// 1 is linear in latent pixels.
	PixelExponent float64 `koanf:"pixel_exponent" json:"pixel_exponent,omitempty"`
	// Batch describes how much throughput batching buys.
	Batch BatchConfig `koanf:"batch" json:"batch,omitempty"`

	// UpscaleSecondsPerMP is the time an upscale model (ESRGAN class) takes
	// per output megapixel.
	UpscaleSecondsPerMP float64 `koanf:"upscale_seconds_per_mp" json:"upscale_seconds_per_mp,omitempty"`

	// DiskBytesPerS is the read bandwidth from the model store into host RAM.
	DiskBytesPerS float64 `koanf:"disk_bytes_per_s" json:"disk_bytes_per_s,omitempty"`
	// H2DBytesPerS is the host→device bandwidth used when the Device does
	// not report one.
	H2DBytesPerS float64 `koanf:"h2d_bytes_per_s" json:"h2d_bytes_per_s,omitempty"`
	// PageableFactor is the fraction of the pinned host→device bandwidth a
	// load reaches: model files are read into pageable memory.
	PageableFactor float64 `koanf:"pageable_factor" json:"pageable_factor,omitempty"`
	// LoadOverheadSeconds is charged once per load on top of the transfer
	// (header parse, allocation, building the module).
	LoadOverheadSeconds float64 `koanf:"load_overhead_seconds" json:"load_overhead_seconds,omitempty"`
}

// Family holds the compute costs of one model family on the reference GPU.
type Family struct {
	// RefWidth and RefHeight are the resolution StepSeconds was measured at.
	RefWidth  int `koanf:"ref_width" json:"ref_width,omitempty"`
	RefHeight int `koanf:"ref_height" json:"ref_height,omitempty"`
	// StepSeconds is one sampler step at the reference resolution and batch
	// size 1, net of text encoding and VAE decode (those are charged by
	// their own nodes), so that a job's estimate adds up to the measured
	// end-to-end time.
	StepSeconds float64 `koanf:"step_seconds" json:"step_seconds,omitempty"`
	// DecodeSecondsPerMP is the VAE decode time per output megapixel.
	DecodeSecondsPerMP float64 `koanf:"decode_seconds_per_mp" json:"decode_seconds_per_mp,omitempty"`
	// TextEncodeSeconds is one prompt through the family's text encoders.
	TextEncodeSeconds float64 `koanf:"text_encode_seconds" json:"text_encode_seconds,omitempty"`
	// LoRAApplySeconds is patching one LoRA into the model's weights.
	LoRAApplySeconds float64 `koanf:"lora_apply_seconds" json:"lora_apply_seconds,omitempty"`
	// ActivationBytesPerMP is the VRAM a run needs beyond the weights, per
	// image megapixel (linear in pixels and in batch size).
	ActivationBytesPerMP float64 `koanf:"activation_bytes_per_mp" json:"activation_bytes_per_mp,omitempty"`
}

// BatchConfig describes batch efficiency as the throughput gain at batch
// size 8 over batch size 1, measured at two image sizes. The gain falls as
// images grow (the GPU is already busy with one large latent); between the
// two sizes it is interpolated in log–log space and outside them it is held.
type BatchConfig struct {
	// SmallPixels is the pixel count where SmallGain8 was measured.
	SmallPixels int `koanf:"small_pixels" json:"small_pixels,omitempty"`
	// SmallGain8 is the throughput gain of batch 8 over batch 1 at SmallPixels.
	SmallGain8 float64 `koanf:"small_gain8" json:"small_gain8,omitempty"`
	// LargePixels is the pixel count where LargeGain8 was measured.
	LargePixels int `koanf:"large_pixels" json:"large_pixels,omitempty"`
	// LargeGain8 is the throughput gain of batch 8 over batch 1 at LargePixels.
	LargeGain8 float64 `koanf:"large_gain8" json:"large_gain8,omitempty"`
}

// Default family names.
const (
	FamilySD15 = "sd15"
	FamilySDXL = "sdxl"
	FamilySD3  = "sd3"
	FamilyFlux = "flux"
)

// Reference figures the defaults are worked out from (shared/COSTS.md).
const (
	mp = 1 << 20 // pixels in a megapixel as used here: 1024² = 1 MP

	// Text encoding: Flux TextEncodingStage (CLIP-L + T5-XXL) 30.5 ms (SGL ⚠).
	refTextEncode = 0.0305

	// SD1.5 512², 50 steps: 1.591 s end to end (FAL); full VAE costs
	// 0.037 s more than tiny VAE (FAL older README, D).
	sd15EndToEnd, sd15Steps, sd15Decode = 1.591, 50, 0.037
	// SDXL 1024², 30 steps, bf16 + SDPA: 3.31 s (PTB); full VAE 0.24 s per
	// image more than TAESD (HFX, D).
	sdxlEndToEnd, sdxlSteps, sdxlDecode = 3.31, 30, 0.24
	// SD3-medium 1024², 28 steps with CFG: 4.762 s (SD3). No decode row: the
	// SDXL figure stands in (⚠ assumption).
	sd3EndToEnd, sd3Steps, sd3Decode = 4.762, 28, sdxlDecode
	// Flux-dev 1024², 28 steps, A100 bf16: 15.65 s (BFX); DecodingStage
	// 27.6 ms (SGL ⚠).
	fluxEndToEnd, fluxSteps, fluxDecode = 15.65, 28, 0.0276

	// LoRA apply: the LCM LoRA file (135 MB SD1.5, 394 MB SDXL) moved at
	// the A100's 25.13 GB/s host→device (nvbandwidth #42), D ⚠ (assumes the
	// patch is transfer-bound).
	refH2D       = 25.13e9
	sd15LoRAFile = 135e6
	sdxlLoRAFile = 394e6

	// Activations: SDXL fp16, 4 images at 1024² need 21.72 GB (HFX) with
	// 6.94 GB of weights (sd_xl_base_1.0); SD3-medium needs 18.77 GB (SD3)
	// with 15.8 GB of weights (incl. clips + T5 fp16).
	sdxlActivationPerMP = (21.72e9 - 6.94e9) / 4
	sd3ActivationPerMP  = 18.77e9 - 15.8e9
)

// Default returns the cost model of shared/COSTS.md on the reference GPU
// (A100-80G) at TimeScale 1. doc.go lists the source of every value.
func Default() Config {
	return Config{
		TimeScale: 1,
		Families: map[string]Family{
			FamilySD15: {
				RefWidth: 512, RefHeight: 512,
				StepSeconds:          (sd15EndToEnd - sd15Decode - 2*refTextEncode) / sd15Steps,
				DecodeSecondsPerMP:   sd15Decode / (512 * 512 / float64(mp)),
				TextEncodeSeconds:    refTextEncode,
				LoRAApplySeconds:     sd15LoRAFile / refH2D,
				ActivationBytesPerMP: sdxlActivationPerMP, // no SD1.5 row: SDXL's ⚠
			},
			FamilySDXL: {
				RefWidth: 1024, RefHeight: 1024,
				StepSeconds:          (sdxlEndToEnd - sdxlDecode - 2*refTextEncode) / sdxlSteps,
				DecodeSecondsPerMP:   sdxlDecode,
				TextEncodeSeconds:    refTextEncode,
				LoRAApplySeconds:     sdxlLoRAFile / refH2D,
				ActivationBytesPerMP: sdxlActivationPerMP,
			},
			FamilySD3: {
				RefWidth: 1024, RefHeight: 1024,
				StepSeconds:          (sd3EndToEnd - sd3Decode - 2*refTextEncode) / sd3Steps,
				DecodeSecondsPerMP:   sd3Decode,
				TextEncodeSeconds:    refTextEncode,
				LoRAApplySeconds:     sdxlLoRAFile / refH2D, // no SD3 row: SDXL's ⚠
				ActivationBytesPerMP: sd3ActivationPerMP,
			},
			FamilyFlux: {
				RefWidth: 1024, RefHeight: 1024,
				StepSeconds:          (fluxEndToEnd - fluxDecode - refTextEncode) / fluxSteps,
				DecodeSecondsPerMP:   fluxDecode,
				TextEncodeSeconds:    refTextEncode,
				LoRAApplySeconds:     sdxlLoRAFile / refH2D, // no Flux row: SDXL's ⚠
				ActivationBytesPerMP: sdxlActivationPerMP,   // no usable Flux row: SDXL's ⚠
			},
		},
		FallbackFamily: FamilySDXL,
		// A11: SD1.x batch 1 at 18.8–20.6 it/s (mid 19.7) at 512² and 7.5 it/s
		// at 1024²: 4× the pixels cost 2.63× the time, so ln 2.63 / ln 4 ≈ 0.70.
		PixelExponent: 0.70,
		Batch: BatchConfig{
			SmallPixels: 512 * 512, SmallGain8: 2.25, // A11, SD1.x 512²
			LargePixels: 1024 * 1024, LargeGain8: 1.13, // A11, SD1.x 1024²
		},
		// No COSTS.md row times an upscale model (⚠ assumption): 0.1 s per
		// output megapixel, i.e. 0.42 s for RealESRGAN_x4plus 512² → 2048².
		UpscaleSecondsPerMP: 0.1,
		// Local NVMe as seen in practice: 10 GB in 6 s (ComfyUI #1992).
		DiskBytesPerS: 1.7e9,
		// A100-SXM4 host→device, 512 MiB–1 GiB buffers (nvbandwidth #42).
		H2DBytesPerS: refH2D,
		// Pageable transfers run at about half the pinned rate (lab page ⚠).
		PageableFactor: 0.5,
		// No COSTS.md row isolates a per-load overhead (⚠ assumption).
		LoadOverheadSeconds: 0.5,
	}
}

// WithDefaults returns a copy of c with every zero field, including the
// zero fields of each family, filled from Default. A family Default does
// not know is filled from the fallback family.
func (c Config) WithDefaults() Config {
	d := Default()
	if c.TimeScale == 0 {
		c.TimeScale = d.TimeScale
	}
	if c.FallbackFamily == "" {
		c.FallbackFamily = d.FallbackFamily
	}
	if c.PixelExponent == 0 {
		c.PixelExponent = d.PixelExponent
	}
	if c.Batch.SmallPixels == 0 {
		c.Batch.SmallPixels = d.Batch.SmallPixels
	}
	if c.Batch.SmallGain8 == 0 {
		c.Batch.SmallGain8 = d.Batch.SmallGain8
	}
	if c.Batch.LargePixels == 0 {
		c.Batch.LargePixels = d.Batch.LargePixels
	}
	if c.Batch.LargeGain8 == 0 {
		c.Batch.LargeGain8 = d.Batch.LargeGain8
	}
	if c.UpscaleSecondsPerMP == 0 {
		c.UpscaleSecondsPerMP = d.UpscaleSecondsPerMP
	}
	if c.DiskBytesPerS == 0 {
		c.DiskBytesPerS = d.DiskBytesPerS
	}
	if c.H2DBytesPerS == 0 {
		c.H2DBytesPerS = d.H2DBytesPerS
	}
	if c.PageableFactor == 0 {
		c.PageableFactor = d.PageableFactor
	}
	if c.LoadOverheadSeconds == 0 {
		c.LoadOverheadSeconds = d.LoadOverheadSeconds
	}

	fams := make(map[string]Family, len(d.Families)+len(c.Families))
	for name, f := range d.Families {
		fams[name] = f
	}
	fallback, ok := d.Families[normalize(c.FallbackFamily)]
	if !ok {
		fallback = d.Families[d.FallbackFamily]
	}
	for name, f := range c.Families {
		name = normalize(name)
		base, ok := d.Families[name]
		if !ok {
			base = fallback
		}
		fams[name] = f.withDefaults(base)
	}
	c.Families = fams
	return c
}

func (f Family) withDefaults(d Family) Family {
	if f.RefWidth == 0 {
		f.RefWidth = d.RefWidth
	}
	if f.RefHeight == 0 {
		f.RefHeight = d.RefHeight
	}
	if f.StepSeconds == 0 {
		f.StepSeconds = d.StepSeconds
	}
	if f.DecodeSecondsPerMP == 0 {
		f.DecodeSecondsPerMP = d.DecodeSecondsPerMP
	}
	if f.TextEncodeSeconds == 0 {
		f.TextEncodeSeconds = d.TextEncodeSeconds
	}
	if f.LoRAApplySeconds == 0 {
		f.LoRAApplySeconds = d.LoRAApplySeconds
	}
	if f.ActivationBytesPerMP == 0 {
		f.ActivationBytesPerMP = d.ActivationBytesPerMP
	}
	return f
}

// Validate reports the first invalid field, naming its key under "cost.".
// Call it after WithDefaults: zero fields are invalid.
func (c Config) Validate() error {
	var errs []error
	positive := func(key string, v float64) {
		if !(v > 0) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("cost.%s: must be > 0", key))
		}
	}
	nonNegative := func(key string, v float64) {
		if !(v >= 0) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("cost.%s: must be >= 0", key))
		}
	}
	positive("time_scale", c.TimeScale)
	positive("pixel_exponent", c.PixelExponent)
	if c.PixelExponent > 2 {
		errs = append(errs, errors.New("cost.pixel_exponent: must be <= 2"))
	}
	positive("batch.small_pixels", float64(c.Batch.SmallPixels))
	positive("batch.large_pixels", float64(c.Batch.LargePixels))
	if c.Batch.LargePixels <= c.Batch.SmallPixels {
		errs = append(errs, errors.New("cost.batch.large_pixels: must be > batch.small_pixels"))
	}
	for _, g := range []struct {
		key string
		v   float64
	}{{"batch.small_gain8", c.Batch.SmallGain8}, {"batch.large_gain8", c.Batch.LargeGain8}} {
		if !(g.v >= 1 && g.v <= 8) {
			errs = append(errs, fmt.Errorf("cost.%s: must be in [1, 8]", g.key))
		}
	}
	nonNegative("upscale_seconds_per_mp", c.UpscaleSecondsPerMP)
	positive("disk_bytes_per_s", c.DiskBytesPerS)
	positive("h2d_bytes_per_s", c.H2DBytesPerS)
	if !(c.PageableFactor > 0 && c.PageableFactor <= 1) {
		errs = append(errs, errors.New("cost.pageable_factor: must be in (0, 1]"))
	}
	nonNegative("load_overhead_seconds", c.LoadOverheadSeconds)
	if len(c.Families) == 0 {
		errs = append(errs, errors.New("cost.families: must not be empty"))
	}
	if _, ok := c.Families[normalize(c.FallbackFamily)]; !ok {
		errs = append(errs, fmt.Errorf("cost.fallback_family: %q is not in cost.families", c.FallbackFamily))
	}
	names := make([]string, 0, len(c.Families))
	for name := range c.Families {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		f := c.Families[name]
		key := "families." + name + "."
		positive(key+"ref_width", float64(f.RefWidth))
		positive(key+"ref_height", float64(f.RefHeight))
		positive(key+"step_seconds", f.StepSeconds)
		nonNegative(key+"decode_seconds_per_mp", f.DecodeSecondsPerMP)
		nonNegative(key+"text_encode_seconds", f.TextEncodeSeconds)
		nonNegative(key+"lora_apply_seconds", f.LoRAApplySeconds)
		nonNegative(key+"activation_bytes_per_mp", f.ActivationBytesPerMP)
	}
	return errors.Join(errs...)
}

// Decode builds a Config from a generic map with the config's keys (as
// koanf would see them under "cost", or as sent in a worker's hello
// options), fills defaults and validates. Unknown keys are errors. Numbers
// may be of any Go numeric type (msgpack decodes small integers as int8).
func Decode(m map[string]any) (Config, error) {
	var c Config
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:          "koanf",
		ErrorUnused:      true,
		WeaklyTypedInput: true,
		Result:           &c,
	})
	if err != nil {
		return Config{}, fmt.Errorf("cost: build decoder: %w", err)
	}
	if err := dec.Decode(m); err != nil {
		return Config{}, fmt.Errorf("cost: decode: %w", err)
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Map returns c as a generic map with the config's keys, the inverse of
// Decode. Zero fields are left out. The kernel sends it as the "cost" option
// of a worker's hello.
func (c Config) Map() map[string]any {
	b, err := json.Marshal(c)
	if err != nil {
		// Config holds only numbers, strings and maps of them.
		panic(fmt.Sprintf("cost: marshal config: %v", err))
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("cost: unmarshal config: %v", err))
	}
	return m
}

// normalize lower-cases a family name and drops separators, so that
// "SD1.5", "sd-15" and "sd_15" are all "sd15".
func normalize(name string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '-', '_', '.', ' ':
			return -1
		}
		return r
	}, strings.ToLower(strings.TrimSpace(name)))
}
