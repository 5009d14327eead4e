package workflow

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Model families, the cost model's guess at what a file is.
const (
	FamilySD15        = "sd15"
	FamilySDXL        = "sdxl"
	FamilySD3         = "sd3"
	FamilyFlux        = "flux"
	FamilyLoRA        = "lora"
	FamilyVAE         = "vae"
	FamilyControlNet  = "controlnet"
	FamilyUpscaler    = "upscaler"
	FamilyTextEncoder = "text_encoder"
	FamilyCLIPVision  = "clip_vision"
	FamilyStyleModel  = "style_model"
	FamilyGLIGEN      = "gligen"
	FamilyHypernet    = "hypernetwork"
	FamilyPhotoMaker  = "photomaker"
)

// ModelRef is one model file a workflow needs.
type ModelRef struct {
	// ID is "folder/name", e.g. "checkpoints/sdxl/foo.safetensors".
	ID string `json:"id"`
	// Folder is ComfyUI's canonical model folder, e.g. "checkpoints".
	Folder string `json:"folder"`
	// Name is the file name inside Folder, possibly with subdirectories.
	Name string `json:"name"`
	// NodeID is the first node (in topological order) that loads it.
	NodeID string `json:"node_id"`
	// Family is a guess for the cost model; see the Family* constants.
	Family string `json:"family"`
	// WeightDType is the dtype the loader casts the weights to on load
	// (UNETLoader's weight_dtype: fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2),
	// empty for the file's own dtype. It sets the model's footprint.
	WeightDType string `json:"weight_dtype,omitempty"`
}

type loaderInput struct {
	input, folder string
}

// loaders maps loader node classes to the inputs that name models.
var loaders = map[string][]loaderInput{
	"CheckpointLoaderSimple":    {{"ckpt_name", "checkpoints"}},
	"CheckpointLoader":          {{"ckpt_name", "checkpoints"}},
	"unCLIPCheckpointLoader":    {{"ckpt_name", "checkpoints"}},
	"ImageOnlyCheckpointLoader": {{"ckpt_name", "checkpoints"}},
	"DiffusersLoader":           {{"model_path", "diffusers"}}, // a diffusers directory is one catalog entry
	"LoraLoader":                {{"lora_name", "loras"}},
	"LoraLoaderModelOnly":       {{"lora_name", "loras"}},
	"VAELoader":                 {{"vae_name", "vae"}},
	"ControlNetLoader":          {{"control_net_name", "controlnet"}},
	"DiffControlNetLoader":      {{"control_net_name", "controlnet"}},
	"UNETLoader":                {{"unet_name", "diffusion_models"}},
	"CLIPLoader":                {{"clip_name", "text_encoders"}},
	"DualCLIPLoader":            {{"clip_name1", "text_encoders"}, {"clip_name2", "text_encoders"}},
	"TripleCLIPLoader": {{"clip_name1", "text_encoders"}, {"clip_name2", "text_encoders"},
		{"clip_name3", "text_encoders"}},
	"QuadrupleCLIPLoader": {{"clip_name1", "text_encoders"}, {"clip_name2", "text_encoders"},
		{"clip_name3", "text_encoders"}, {"clip_name4", "text_encoders"}},
	"CLIPVisionLoader":   {{"clip_name", "clip_vision"}},
	"UpscaleModelLoader": {{"model_name", "upscale_models"}},
	"StyleModelLoader":   {{"style_model_name", "style_models"}},
	"GLIGENLoader":       {{"gligen_name", "gligen"}},
	"HypernetworkLoader": {{"hypernetwork_name", "hypernetworks"}},
	"PhotoMakerLoader":   {{"photomaker_model_name", "photomaker"}},
	// ComfyUI-GGUF names the legacy folders.
	"UnetLoaderGGUF":     {{"unet_name", "unet"}},
	"CLIPLoaderGGUF":     {{"clip_name", "clip"}},
	"DualCLIPLoaderGGUF": {{"clip_name1", "clip"}, {"clip_name2", "clip"}},
}

// IsLoaderClass reports whether Models reads model names from nodes of the
// class.
func IsLoaderClass(class string) bool { _, ok := loaders[class]; return ok }

// CanonicalFolder maps ComfyUI's legacy folder names to the current ones:
// "unet" to "diffusion_models" and "clip" to "text_encoders".
func CanonicalFolder(folder string) string {
	switch folder {
	case "unet":
		return "diffusion_models"
	case "clip":
		return "text_encoders"
	}
	return folder
}

// CheckModelName reports why name is not a safe model file name: empty,
// absolute, with backslashes, NUL or other control characters, empty, "." or
// ".." segments, or invalid UTF-8. Subdirectories ("sdxl/foo.safetensors")
// are allowed.
func CheckModelName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case len(name) > 1024:
		return fmt.Errorf("name longer than 1024 bytes")
	case !utf8.ValidString(name):
		return fmt.Errorf("name is not valid utf-8")
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("absolute path")
	case strings.Contains(name, `\`):
		return fmt.Errorf("backslash in name")
	case strings.Contains(name, ".."):
		return fmt.Errorf("%q in name", "..")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("control character in name")
		}
	}
	if len(name) >= 2 && name[1] == ':' {
		return fmt.Errorf("drive letter in name")
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." {
			return fmt.Errorf("empty or %q path segment", ".")
		}
	}
	return nil
}

// ModelID returns "folder/name" after canonicalising folder and checking
// both parts with CheckModelName.
func ModelID(folder, name string) (string, error) {
	folder = CanonicalFolder(folder)
	if err := CheckModelName(folder); err != nil || strings.Contains(folder, "/") {
		return "", fmt.Errorf("bad model folder %q", folder)
	}
	if err := CheckModelName(name); err != nil {
		return "", fmt.Errorf("model name %q: %w", name, err)
	}
	return folder + "/" + name, nil
}

// SplitModelID splits and checks an id made by ModelID.
func SplitModelID(id string) (folder, name string, err error) {
	folder, name, ok := strings.Cut(id, "/")
	if !ok {
		return "", "", fmt.Errorf("model id %q: want folder/name", id)
	}
	if _, err := ModelID(folder, name); err != nil {
		return "", "", fmt.Errorf("model id %q: %w", id, err)
	}
	return CanonicalFolder(folder), name, nil
}

// GuessFamily guesses a model's family from its folder and name.
func GuessFamily(folder, name string) string {
	switch CanonicalFolder(folder) {
	case "loras":
		return FamilyLoRA
	case "vae":
		return FamilyVAE
	case "controlnet":
		return FamilyControlNet
	case "upscale_models":
		return FamilyUpscaler
	case "text_encoders":
		return FamilyTextEncoder
	case "clip_vision":
		return FamilyCLIPVision
	case "style_models":
		return FamilyStyleModel
	case "gligen":
		return FamilyGLIGEN
	case "hypernetworks":
		return FamilyHypernet
	case "photomaker":
		return FamilyPhotoMaker
	}
	// checkpoints, diffusion_models and anything else: by name.
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "flux"):
		return FamilyFlux
	case strings.Contains(n, "sd3"):
		return FamilySD3
	case strings.Contains(n, "xl"):
		return FamilySDXL
	case strings.Contains(n, "1.5"), strings.Contains(n, "1-5"), strings.Contains(n, "v1"):
		return FamilySD15
	}
	return FamilySD15
}

// Models returns the models the workflow's loader nodes name, deduplicated,
// in topological order of the nodes that load them.
func (g *Graph) Models() []ModelRef {
	return append([]ModelRef(nil), g.models...)
}

func (g *Graph) extractModels() ([]ModelRef, error) {
	var out []ModelRef
	seen := map[string]bool{}
	for _, n := range g.order {
		for _, li := range loaders[n.ClassType] {
			v, ok := g.literal(n, li.input)
			if !ok {
				if _, present := n.Inputs[li.input]; present {
					return nil, newErr(ErrMissingModelName, n.ID, "input "+li.input,
						"model name is linked to a node with no literal string value")
				}
				return nil, newErr(ErrMissingModelName, n.ID, "input "+li.input, "loader names no model")
			}
			name, ok := v.(string)
			if !ok || name == "" {
				return nil, newErr(ErrMissingModelName, n.ID, "input "+li.input,
					"model name must be a non-empty string")
			}
			id, err := ModelID(li.folder, name)
			if err != nil {
				return nil, newErr(ErrInvalidModelName, n.ID, "input "+li.input, "%v", err)
			}
			if seen[id] {
				continue
			}
			seen[id] = true
			folder := CanonicalFolder(li.folder)
			ref := ModelRef{ID: id, Folder: folder, Name: name, NodeID: n.ID, Family: GuessFamily(folder, name)}
			if dt, ok := g.literal(n, "weight_dtype"); ok {
				if s, ok := dt.(string); ok && s != "default" {
					ref.WeightDType = s
				}
			}
			out = append(out, ref)
		}
	}
	return out, nil
}
