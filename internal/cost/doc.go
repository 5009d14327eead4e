// Package cost is kiln's model of what GPU work costs in time and memory.
//
// kiln-worker-sim charges these times (by sleeping on a clock) instead of
// running a GPU, and the simulator will charge the same times in virtual
// time, so the two agree. The functions are pure and deterministic: they
// compute durations and never sleep.
//
//	c := cost.Default()                       // A100-80G reference, TimeScale 1
//	dev := cost.Device{H2DBytesPerS: 25.13e9, ComputeFactor: 1}
//	c.LoadTime("sdxl", 6_940_000_000, dev)    // disk → RAM → device: ≈ 5.1 s
//	c.StepTime("sdxl", 1024, 1024, 1, dev)    // one step: 100.3 ms
//	c.JobEstimate(cost.TextToImage("sdxl", 30, 1024, 1024, 1), dev) // 3.31 s
//
// # Model
//
// Compute times are per family (sd15, sdxl, sd3, flux; aliases such as
// "SD1.5" or "flux-schnell" map onto them, unknown families use
// FallbackFamily) and are divided by the device's ComputeFactor (A100-80G =
// 1) and multiplied by TimeScale:
//
//   - text encode: TextEncodeSeconds per prompt;
//   - LoRA apply: LoRAApplySeconds per LoRA;
//   - sampler step: StepSeconds × (pixels / reference pixels)^PixelExponent ×
//     BatchFactor(pixels, batch), where BatchFactor = batch^(1 − log8 g) and
//     g, the throughput gain of batch 8 over batch 1, falls from 2.25 at 512²
//     to 1.13 at 1024² (interpolated in log–log space, held outside);
//   - VAE decode: DecodeSecondsPerMP × megapixels × batch (linear: the VAE is
//     convolutional);
//   - upscale model: UpscaleSecondsPerMP × output megapixels × batch.
//
// A megapixel here is 2²⁰ pixels, so 1024² is exactly 1 MP.
//
// StepSeconds is net of text encoding and decode: the published figures are
// end-to-end time ÷ steps, so the default takes the decode and two prompts
// (one for Flux, which has no negative prompt) out of the measured end-to-end
// time before dividing. A text-to-image estimate therefore adds up to the
// measured end-to-end time exactly (SDXL 1024², 30 steps: 3.31 s).
//
// Loads are bandwidth-bound, so the compute factor does not apply to them:
// LoadTime = nominal bytes / DiskBytesPerS + LoadOverheadSeconds + nominal
// bytes / (device H2D × PageableFactor), times TimeScale. Nominal bytes are the
// size the (possibly scaled-down synthetic) file stands for.
//
// Memory: VRAMBytes is the weights, taken as the nominal file size (files
// hold weights in the dtype they run in). ActivationBytes is what a run adds:
// ActivationBytesPerMP × megapixels × batch.
//
// # Defaults and their sources
//
// Sources are the keys and rows of shared/COSTS.md (FAL, PTB, HFX, SD3, BFX,
// SGL, A11, nvbandwidth #42, ComfyUI #1992, lab page). D = worked out from a
// cited value; ⚠ = weak source or assumption.
//
//	key                          default            source (COSTS.md)
//	time_scale                   1                  -
//	families.sd15.ref_*          512×512            FAL SD1.5 512² row
//	families.sd15.step_seconds   0.02986            (1.591 s − 0.037 − 2×0.0305) / 50 steps; FAL 1.591 s/image (D)
//	families.sdxl.ref_*          1024×1024          PTB SDXL 1024² row
//	families.sdxl.step_seconds   0.1003             (3.31 s − 0.24 − 2×0.0305) / 30; PTB bf16+SDPA 3.31 s (D)
//	families.sd3.ref_*           1024×1024          SD3 row
//	families.sd3.step_seconds    0.1593             (4.762 s − 0.24 − 2×0.0305) / 28; SD3 4.762 s (D)
//	families.flux.ref_*          1024×1024          BFX row
//	families.flux.step_seconds   0.5569             (15.65 s − 0.0276 − 0.0305) / 28; BFX A100 bf16 15.65 s (D)
//	*.text_encode_seconds        0.0305             SGL Flux TextEncodingStage 30.5 ms ⚠ (used for all)
//	sd15.decode_seconds_per_mp   0.148              FAL old README: full VAE +0.037 s at 512² (D)
//	sdxl.decode_seconds_per_mp   0.24               HFX: full VAE +0.24 s/image at 1024² (D)
//	sd3.decode_seconds_per_mp    0.24               no row: SDXL's ⚠
//	flux.decode_seconds_per_mp   0.0276             SGL DecodingStage 27.6 ms ⚠
//	sd15.lora_apply_seconds      0.0054             LCM LoRA SD1.5 135 MB / 25.13 GB/s (D ⚠)
//	sdxl.lora_apply_seconds      0.0157             LCM LoRA SDXL 394 MB / 25.13 GB/s (D ⚠); also sd3, flux ⚠
//	sdxl.activation_bytes_per_mp 3.695e9            HFX: (21.72 GB − 6.94 GB weights) / 4 images (D); also sd15, flux ⚠
//	sd3.activation_bytes_per_mp  2.97e9             SD3: 18.77 GB − 15.8 GB weights (D)
//	fallback_family              sdxl               -
//	pixel_exponent               0.70               A11: SD1.x 19.7 it/s at 512² vs 7.5 it/s at 1024² (D)
//	batch.small_gain8            2.25 at 512²       A11 batch scaling, SD1.x 512² (D)
//	batch.large_gain8            1.13 at 1024²      A11 batch scaling, SD1.x 1024² (D)
//	upscale_seconds_per_mp       0.1                no row: assumption ⚠
//	disk_bytes_per_s             1.7e9              ComfyUI #1992: 10 GB in 6 s (NVMe seen in practice)
//	h2d_bytes_per_s              25.13e9            nvbandwidth #42: A100-SXM4 H2D, 512 MiB–1 GiB buffers
//	pageable_factor              0.5                lab page: pageable ≈ half of pinned ⚠
//	load_overhead_seconds        0.5                no row: assumption ⚠
//
// Not used: the HFX + FAL ×2.1 at batch 4 for SDXL on A100 (⚠, mixes two
// sources); FAL's 0.119 s/step for SDXL at 50 steps (PTB's 30-step run is the
// ComfyUI-typical one, with SDPA); the GIGA RTX 4090 rows (⚠ vendor).
//
// # Config
//
// Config decodes from koanf (section "cost") or from a generic map with
// Decode; Map is the inverse, used for the "cost" option of a worker's hello.
// A partial config is enough: WithDefaults fills every zero field, including
// the zero fields of a family (a new family starts from FallbackFamily).
package cost
