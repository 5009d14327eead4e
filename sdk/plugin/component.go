package plugin

import "strings"

// ComponentOf returns the component kind a ComfyUI model folder holds:
// "checkpoints/x.safetensors" → "checkpoint", "loras/…" → "lora". Unknown
// folders give "model".
func ComponentOf(key string) string {
	folder, _, ok := strings.Cut(key, "/")
	if !ok {
		return "model"
	}
	switch folder {
	case "checkpoints":
		return "checkpoint"
	case "loras":
		return "lora"
	case "vae":
		return "vae"
	case "controlnet":
		return "controlnet"
	case "upscale_models":
		return "upscaler"
	case "text_encoders", "clip":
		return "text_encoder"
	case "clip_vision":
		return "clip_vision"
	case "unet", "diffusion_models":
		return "unet"
	case "llm", "llms":
		return "llm"
	}
	return "model"
}

// DependsOnBase reports whether a component kind patches a base model and
// so must load after it (LoRAs and ControlNets do; VAEs and text encoders
// load in parallel with the checkpoint).
func DependsOnBase(component string) bool {
	return component == "lora" || component == "controlnet"
}
