package modelfile

import (
	"strings"

	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Decimal units, as Hugging Face file pages give sizes.
const (
	mb = 1_000_000
	gb = 1_000_000_000
)

// NominalSize returns the realistic size in bytes of a model file of the
// family, refined by its name. Figures come from /work/shared/COSTS.md §3
// (Hugging Face file pages); the row used is named beside each case.
// Families COSTS.md has no row for get rough estimates, marked as such.
func NominalSize(family, name string) int64 {
	n := strings.ToLower(name)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(n, s) {
				return true
			}
		}
		return false
	}
	switch family {
	case workflow.FamilySD15:
		if has("fp32") {
			return 4_270 * mb // §3 "SD1.5 v1-5-pruned-emaonly (fp32)": 4.27 GB
		}
		return 2_130 * mb // §3 "SD1.5 ... fp16": 2.13 GB
	case workflow.FamilySDXL:
		if has("refiner") {
			return 6_080 * mb // §3 "SDXL refiner 1.0": 6.08 GB
		}
		return 6_940 * mb // §3 "SDXL sd_xl_base_1.0": 6.94 GB
	case workflow.FamilySD3:
		switch {
		case has("t5xxlfp16", "t5xxl_fp16"):
			return 15_800 * mb // §3 "SD3-medium + T5 fp16": 15.8 GB
		case has("t5xxlfp8", "t5xxl_fp8"):
			return 10_900 * mb // §3 "SD3-medium + T5 fp8": 10.9 GB
		case has("clips"):
			return 5_970 * mb // §3 "SD3-medium incl. clips": 5.97 GB
		}
		return 4_340 * mb // §3 "SD3-medium bare": 4.34 GB
	case workflow.FamilyFlux:
		if has("fp8") {
			return 11_900 * mb // §3 "flux1-dev fp8": 11.9 GB
		}
		return 23_800 * mb // §3 "flux1-dev bf16": 23.8 GB
	case workflow.FamilyVAE:
		return 335 * mb // §3 "SDXL VAE" and "ae.safetensors": 335 MB
	case workflow.FamilyLoRA:
		if has("xl") {
			return 394 * mb // §3 "LoRA: LCM SDXL": 394 MB
		}
		return 135 * mb // §3 "LoRA: LCM SD1.5": 135 MB
	case workflow.FamilyControlNet:
		switch {
		case has("small"):
			return 320 * mb // §3 "ControlNet SDXL canny small fp16": 320 MB
		case has("mid"):
			return 545 * mb // §3 "ControlNet SDXL canny mid fp16": 545 MB
		case has("xl"):
			return 2_500 * mb // §3 "ControlNet SDXL canny fp16": 2.5 GB
		}
		return 723 * mb // §3 "ControlNet SD1.5 canny pruned fp16": 723 MB
	case workflow.FamilyUpscaler:
		switch {
		case has("ultrasharp"):
			return 66_961_958 // §3 "4x-UltraSharp": 66,961,958 B
		case has("anime_6b"):
			return 17_900_000 // §3 "RealESRGAN anime_6B": 17.9 MB
		case has("realesr-general"):
			return 4_890_000 // §3 "realesr-general-x4v3": 4.89 MB
		}
		return 67_040_989 // §3 "RealESRGAN_x4plus": 67,040,989 B (4x ESRGAN ≈ 64 MiB)
	case workflow.FamilyTextEncoder:
		switch {
		case has("t5") && has("scaled"):
			return 5_160 * mb // §3 "T5-XXL fp8 scaled": 5.16 GB
		case has("t5") && has("fp8"):
			return 4_890 * mb // §3 "T5-XXL fp8_e4m3fn": 4.89 GB
		case has("t5"):
			return 9_790 * mb // §3 "T5-XXL fp16": 9.79 GB
		case has("clip_g"):
			return 1_390 * mb // §3 "clip_g": 1.39 GB
		}
		return 246 * mb // §3 "clip_l": 246 MB
	case workflow.FamilyCLIPVision:
		return 1_260 * mb // estimate, not in COSTS.md: ViT-H/14 image encoder, fp16
	case workflow.FamilyPhotoMaker:
		return 934 * mb // estimate, not in COSTS.md: photomaker-v1.bin
	case workflow.FamilyGLIGEN:
		return 418 * mb // estimate, not in COSTS.md: gligen sd14 textbox pruned fp16
	}
	return 100 * mb // estimate for style models, hypernetworks and unknown files
}
