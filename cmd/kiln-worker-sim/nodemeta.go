package main

// nodeMeta is what ComfyUI's /object_info says of a class beyond its inputs
// and outputs: the display name (nodes.NODE_DISPLAY_NAME_MAPPINGS, or a V3
// schema's display_name), the module that defines it (python_module:
// "nodes", "comfy_extras.<file>", "custom_nodes.<pack>"), DESCRIPTION,
// input tooltips, OUTPUT_TOOLTIPS, DEPRECATED, EXPERIMENTAL, SEARCH_ALIASES
// and ESSENTIALS_CATEGORY. Classes missing here get ComfyUI's defaults: the
// class name, "nodes", no description, no aliases. A subclass in nodes.py
// inherits its parent's attributes (PreviewImage from SaveImage,
// LoraLoaderModelOnly from LoraLoader), and so does its entry here.
type nodeMeta struct {
	display        string
	module         string
	description    string
	tooltips       map[string]string // input name → tooltip
	outputTooltips []string
	deprecated     bool
	experimental   bool
	searchAliases  []string
	essentials     string // the essentials menu's category
}

// Widget tooltips nodes.py shares between classes.
const (
	temporalSizeDecode = "Only used for video VAEs: Amount of frames to decode at a time."
	temporalSizeEncode = "Only used for video VAEs: Amount of frames to encode at a time."
	temporalOverlap    = "Only used for video VAEs: Amount of frames to overlap."
)

// loraAliases are LoraLoader's SEARCH_ALIASES (and its subclass's).
var loraAliases = []string{"lora", "load lora", "apply lora", "lora loader", "lora model"}

// Modules of the comfy_extras and custom-node classes the sim executes.
const (
	modSD3           = "comfy_extras.nodes_sd3"
	modCustomSampler = "comfy_extras.nodes_custom_sampler"
	modModelAdvanced = "comfy_extras.nodes_model_advanced"
	modFlux          = "comfy_extras.nodes_flux"
	modGGUF          = "custom_nodes.ComfyUI-GGUF"
)

// classMeta follows ComfyUI's nodes.py and comfy_extras at the version that
// docs/comfyui.md names.
var classMeta = map[string]nodeMeta{
	"KSampler": {
		display:     "KSampler",
		description: "Uses the provided model, positive and negative conditioning to denoise the latent image.",
		tooltips: map[string]string{
			"model":        "The model used for denoising the input latent.",
			"seed":         "The random seed used for creating the noise.",
			"steps":        "The number of steps used in the denoising process.",
			"cfg":          "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality.",
			"sampler_name": "The algorithm used when sampling, this can affect the quality, speed, and style of the generated output.",
			"scheduler":    "The scheduler controls how noise is gradually removed to form the image.",
			"positive":     "The conditioning describing the attributes you want to include in the image.",
			"negative":     "The conditioning describing the attributes you want to exclude from the image.",
			"latent_image": "The latent image to denoise.",
			"denoise":      "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling.",
		},
		outputTooltips: []string{"The denoised latent."},
		searchAliases:  []string{"sampler", "sample", "generate", "denoise", "diffuse", "txt2img", "img2img"},
	},
	"KSamplerAdvanced": {display: "KSampler (Advanced)"},
	"CheckpointLoader": {display: "Load Checkpoint With Config (DEPRECATED)", deprecated: true,
		searchAliases: []string{"load model", "model loader"}},
	"CheckpointLoaderSimple": {
		display:     "Load Checkpoint",
		description: "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
		tooltips:    map[string]string{"ckpt_name": "The name of the checkpoint (model) to load."},
		outputTooltips: []string{"The model used for denoising latents.", "The CLIP model used for encoding text prompts.",
			"The VAE model used for encoding and decoding images to and from latent space."},
		searchAliases: []string{"load model", "checkpoint", "model loader", "load checkpoint", "ckpt", "model"},
	},
	"VAELoader": {display: "Load VAE"},
	"LoraLoader": {
		display:     "Load LoRA (Model and CLIP)",
		description: "This LoRA loader is used to modify both diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together.",
		tooltips: map[string]string{
			"model":          "The diffusion model the LoRA will be applied to.",
			"clip":           "The CLIP model the LoRA will be applied to.",
			"lora_name":      "The name of the LoRA.",
			"strength_model": "How strongly to modify the diffusion model. This value can be negative.",
			"strength_clip":  "How strongly to modify the CLIP model. This value can be negative.",
		},
		outputTooltips: []string{"The modified diffusion model.", "The modified CLIP model."},
		searchAliases:  loraAliases,
		essentials:     "Image Generation",
	},
	// LoraLoaderModelOnly subclasses LoraLoader: its output tooltips (both
	// of them, for its one output) and essentials category are LoraLoader's.
	"LoraLoaderModelOnly": {
		display:        "Load LoRA",
		description:    "This LoRAs loader is used to modify the diffusion model, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together.",
		outputTooltips: []string{"The modified diffusion model.", "The modified CLIP model."},
		searchAliases:  loraAliases,
		essentials:     "Image Generation",
	},
	"CLIPLoader": {
		display:     "Load CLIP",
		description: "Recipes:\nsd: clip-l\nstable cascade: clip-g\nsd3: t5 xxl / clip-g / clip-l\nstable audio: t5 base\nmochi: t5 xxl\ncogvideox: t5 xxl (226-token padding)\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\nhidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B\njoyimage: qwen3-vl 8B\nlens: gpt-oss-20b\npixeldit: gemma 2 2B elm\nminimax: MiniMax H3 Qwen3-VL or Music3 Qwen/RVQ",
	},
	"DualCLIPLoader": {
		display:     "Load CLIP (Dual)",
		description: "Recipes:\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\nflux: clip-l, t5\nhidream: at least one of t5 or llama, recommended t5 and llama\nhunyuan_image: qwen2.5vl 7b and byt5 small\nnewbie: gemma-3-4b-it, jina clip v2",
	},
	"ControlNetLoader": {display: "Load ControlNet Model",
		searchAliases: []string{"controlnet", "control net", "cn", "load controlnet", "controlnet loader"}},
	"DiffControlNetLoader": {display: "Load ControlNet Model (diff)"},
	"StyleModelLoader":     {display: "Load Style Model"},
	"CLIPVisionLoader":     {display: "Load CLIP Vision"},
	"UNETLoader":           {display: "Load Diffusion Model"},
	"CLIPTextEncode": {
		display:     "CLIP Text Encode (Prompt)",
		description: "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images.",
		tooltips: map[string]string{
			"text": "The text to be encoded.",
			"clip": "The CLIP model used for encoding the text.",
		},
		outputTooltips: []string{"A conditioning containing the embedded text used to guide the diffusion model."},
		searchAliases:  []string{"text", "prompt", "text prompt", "positive prompt", "negative prompt", "encode text", "text encoder", "encode prompt"},
	},
	"CLIPSetLastLayer": {display: "CLIP Set Last Layer"},
	"ConditioningCombine": {display: "Conditioning (Combine)", essentials: "Image Generation",
		searchAliases: []string{"combine", "merge conditioning", "combine prompts", "merge prompts", "mix prompts", "add prompt"}},
	"ConditioningAverage": {display: "Conditioning (Average)",
		searchAliases: []string{"blend prompts", "interpolate conditioning", "mix prompts", "style fusion", "weighted blend"}},
	"ConditioningConcat": {display: "Conditioning (Concat)"},
	"ConditioningSetArea": {display: "Conditioning (Set Area)",
		searchAliases: []string{"regional prompt", "area prompt", "spatial conditioning", "localized prompt"}},
	"ConditioningSetMask": {display: "Conditioning (Set Mask)",
		searchAliases: []string{"masked prompt", "regional inpaint conditioning", "mask conditioning"}},
	"ControlNetApply": {display: "Apply ControlNet (DEPRECATED)", deprecated: true},
	"ControlNetApplyAdvanced": {display: "Apply ControlNet",
		searchAliases: []string{"controlnet", "apply controlnet", "use controlnet", "control net"}},
	"ConditioningZeroOut": {display: "Conditioning Zero Out", searchAliases: []string{"null conditioning", "clear conditioning"}},
	"VAEDecode": {
		display:     "VAE Decode",
		description: "Decodes latent images back into pixel space images.",
		tooltips: map[string]string{
			"samples": "The latent to be decoded.",
			"vae":     "The VAE model used for decoding the latent.",
		},
		outputTooltips: []string{"The decoded image."},
		searchAliases:  []string{"decode", "decode latent", "latent to image", "render latent"},
	},
	"VAEEncode": {display: "VAE Encode", searchAliases: []string{"encode", "encode image", "image to latent"}},
	"EmptyLatentImage": {
		display:     "Empty Latent Image",
		description: "Create a new batch of empty latent images to be denoised via sampling.",
		tooltips: map[string]string{
			"width":      "The width of the latent images in pixels.",
			"height":     "The height of the latent images in pixels.",
			"batch_size": "The number of latent images in the batch.",
		},
		outputTooltips: []string{"The empty latent image batch."},
		searchAliases:  []string{"empty", "empty latent", "new latent", "create latent", "blank latent", "blank"},
	},
	"LatentUpscale":     {display: "Upscale Latent", searchAliases: []string{"enlarge latent", "resize latent"}},
	"LatentUpscaleBy":   {display: "Upscale Latent By", searchAliases: []string{"enlarge latent", "resize latent", "scale latent"}},
	"RepeatLatentBatch": {display: "Repeat Latent Batch", searchAliases: []string{"duplicate latent", "clone latent"}},
	"SaveImage": {
		display:     "Save Image",
		description: "Saves the input images to your ComfyUI output directory.",
		tooltips: map[string]string{
			"images":          "The images to save.",
			"filename_prefix": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
		},
		searchAliases: []string{"save", "save image", "export image", "output image", "write image", "download"},
		essentials:    "Basics",
	},
	// PreviewImage subclasses SaveImage: its essentials category is
	// SaveImage's; its inputs, and so its tooltips, are its own.
	"PreviewImage": {display: "Preview Image", description: "Preview the images without saving them to the ComfyUI output directory.",
		searchAliases: []string{"preview", "preview image", "show image", "view image", "display image", "image viewer"}, essentials: "Basics"},
	"LoadImage": {display: "Load Image", essentials: "Basics",
		searchAliases: []string{"load image", "open image", "import image", "image input", "upload image", "read image", "image loader"}},
	"ImageScale": {display: "Upscale Image", essentials: "Image Tools",
		searchAliases: []string{"resize", "resize image", "scale image", "image resize", "zoom", "zoom in", "change size"}},
	"ImageScaleBy": {display: "Upscale Image By", essentials: "Image Tools"},
	"ImageInvert":  {display: "Invert Image Colors", essentials: "Image Tools", searchAliases: []string{"reverse colors"}},
	"VAEDecodeTiled": {display: "VAE Decode (Tiled)",
		tooltips: map[string]string{"temporal_size": temporalSizeDecode, "temporal_overlap": temporalOverlap}},
	"ImageScaleToTotalPixels":  {display: "Scale Image to Total Pixels", module: "comfy_extras.nodes_post_processing"},
	"UpscaleModelLoader":       {display: "Load Upscale Model", module: "comfy_extras.nodes_upscale_model"},
	"ImageUpscaleWithModel":    {display: "Upscale Image (using Model)", module: "comfy_extras.nodes_upscale_model"},
	"TripleCLIPLoader":         {module: modSD3},
	"EmptySD3LatentImage":      {module: modSD3},
	"CLIPTextEncodeSD3":        {module: modSD3},
	"ControlNetApplySD3":       {display: "Apply Controlnet with VAE", module: modSD3},
	"CLIPTextEncodeSDXL":       {module: "comfy_extras.nodes_clip_sdxl"},
	"CLIPTextEncodeFlux":       {module: modFlux},
	"FluxGuidance":             {module: modFlux},
	"ModelSamplingSD3":         {module: modModelAdvanced},
	"ModelSamplingFlux":        {module: modModelAdvanced},
	"ModelSamplingDiscrete":    {module: modModelAdvanced},
	"ModelSamplingAuraFlow":    {module: modModelAdvanced},
	"FreeU":                    {module: "comfy_extras.nodes_freelunch"},
	"FreeU_V2":                 {module: "comfy_extras.nodes_freelunch"},
	"RandomNoise":              {module: modCustomSampler},
	"DisableNoise":             {module: modCustomSampler},
	"BasicGuider":              {module: modCustomSampler},
	"CFGGuider":                {module: modCustomSampler},
	"DualCFGGuider":            {module: modCustomSampler},
	"KSamplerSelect":           {module: modCustomSampler},
	"SamplerEulerAncestral":    {module: modCustomSampler},
	"SamplerDPMPP_2M_SDE":      {module: modCustomSampler},
	"SamplerDPMPP_SDE":         {module: modCustomSampler},
	"BasicScheduler":           {module: modCustomSampler},
	"KarrasScheduler":          {module: modCustomSampler},
	"ExponentialScheduler":     {module: modCustomSampler},
	"SDTurboScheduler":         {module: modCustomSampler},
	"BetaSamplingScheduler":    {module: modCustomSampler},
	"SplitSigmas":              {module: modCustomSampler},
	"SamplerCustom":            {module: modCustomSampler},
	"SamplerCustomAdvanced":    {module: modCustomSampler},
	"AlignYourStepsScheduler":  {module: "comfy_extras.nodes_align_your_steps"},
	"Canny":                    {module: "comfy_extras.nodes_canny"},
	"SetUnionControlNetType":   {module: "comfy_extras.nodes_controlnet"},
	"PrimitiveInt":             {display: "Int", module: "comfy_extras.nodes_primitive"},
	"PrimitiveFloat":           {display: "Float", module: "comfy_extras.nodes_primitive"},
	"PrimitiveString":          {display: "String", module: "comfy_extras.nodes_primitive"},
	"PrimitiveStringMultiline": {display: "String (Multiline)", module: "comfy_extras.nodes_primitive"},
	"PrimitiveBoolean":         {display: "Boolean", module: "comfy_extras.nodes_primitive"},
	"UnetLoaderGGUF":           {display: "Unet Loader (GGUF)", module: modGGUF},
	"CLIPLoaderGGUF":           {display: "CLIPLoader (GGUF)", module: modGGUF},
	"DualCLIPLoaderGGUF":       {display: "DualCLIPLoader (GGUF)", module: modGGUF},
	"SaveImageWebsocket":       {display: "Save Image (Websocket)", module: "custom_nodes.websocket_image_save"}, // its file's NODE_DISPLAY_NAME_MAPPINGS
	"VAEEncodeForInpaint":      {display: "VAE Encode (for Inpainting)"},
	"VAEEncodeTiled": {display: "VAE Encode (Tiled)",
		tooltips: map[string]string{"temporal_size": temporalSizeEncode, "temporal_overlap": temporalOverlap}},
	"SetLatentNoiseMask": {display: "Set Latent Noise Mask"},
	"InpaintModelConditioning": {tooltips: map[string]string{
		"noise_mask": "Add a noise mask to the latent so sampling will only happen within the mask. Might improve results or completely break things depending on the model."}},
	"LoadImageMask": {display: "Load Image (as Mask)", essentials: "Image Tools",
		searchAliases: []string{"import mask", "alpha mask", "channel mask"}},
	"EmptyImage": {display: "Empty Image"},
	"ImageBatch": {display: "Batch Images (DEPRECATED)", deprecated: true,
		searchAliases: []string{"combine images", "merge images", "stack images"}},
	"ImagePadForOutpaint": {display: "Pad Image for Outpainting", searchAliases: []string{"extend canvas", "expand image"}},
	"LatentComposite": {display: "Latent Composite",
		searchAliases: []string{"overlay latent", "layer latent", "paste latent"}},
	"LatentBlend":     {display: "Latent Blend", searchAliases: []string{"mix latents", "interpolate latents"}},
	"LatentRotate":    {display: "Rotate Latent"},
	"LatentFlip":      {display: "Flip Latent", searchAliases: []string{"mirror latent"}},
	"LatentCrop":      {display: "Crop Latent", searchAliases: []string{"trim latent", "cut latent"}},
	"LatentFromBatch": {display: "Get Latent From Batch", searchAliases: []string{"select from batch", "pick latent", "batch subset"}},
	"ConditioningMultiply": {display: "Conditioning (Multiply)",
		searchAliases: []string{"scale conditioning", "scale prompt", "multiply conditioning", "multiply prompt"}},
	"ConditioningSetAreaPercentage": {display: "Conditioning (Set Area with Percentage)"},
	"ConditioningSetAreaStrength":   {display: "Conditioning (Set Area Strength)"},
	"CLIPVisionEncode":              {display: "CLIP Vision Encode"},
	"StyleModelApply":               {display: "Apply Style Model", searchAliases: []string{"style transfer"}},
	"unCLIPCheckpointLoader":        {display: "Load unCLIP Checkpoint"},
	"GLIGENLoader":                  {display: "Load GLIGEN Model"},
	"GLIGENTextBoxApply":            {display: "Apply GLIGEN Text Box"},
	"SaveLatent":                    {display: "Save Latent", searchAliases: []string{"export latent"}},
	"LoadLatent":                    {display: "Load Latent", searchAliases: []string{"import latent", "open latent"}},
	"DiffusersLoader": {display: "Load Diffusers Model (DEPRECATED)", deprecated: true,
		searchAliases: []string{"load diffusers model"}},
	// LoadImageOutput subclasses LoadImage: its essentials category is
	// LoadImage's.
	"LoadImageOutput": {
		display:       "Load Image (from Outputs)",
		description:   "Load an image from the output folder. When the refresh button is clicked, the node will update the image list and automatically select the first image, allowing for easy iteration.",
		experimental:  true,
		searchAliases: []string{"output image", "previous generation"},
		essentials:    "Basics",
	},
}
